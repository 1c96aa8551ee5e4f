"""Training (GitHub issue 6): preprocessing, datasets, the seed papers' losses and the accelerate trainer."""
