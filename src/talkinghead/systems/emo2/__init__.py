"""EMO2 (2025): audio -> hand motion (stage 1), then end-effector-guided video (stage 2)."""
