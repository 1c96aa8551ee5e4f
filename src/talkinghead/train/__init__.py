"""Training: preprocessing, datasets, the seed papers' losses, every system's trainer adapter, the accelerate trainer."""
