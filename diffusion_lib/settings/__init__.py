"""What a study, a run and a budget are, torch-free: mining and training settings, the learning-rate
schedule, the budget ladder, run and sweep names, and the fingerprints that key every result."""
