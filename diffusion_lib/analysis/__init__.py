"""What finished runs say, torch-free: statistics, convergence and stability of a gap, instability,
the ladder's tables, the verdict and its interpretation, the ablation table."""
