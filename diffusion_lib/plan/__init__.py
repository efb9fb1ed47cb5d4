"""A study's plan: the validated config, where every result lives, what each job asks of a
scheduler, which runs train together, and the stability sweep that chooses a recipe."""
