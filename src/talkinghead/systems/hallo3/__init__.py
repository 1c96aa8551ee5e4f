"""Hallo3 (2024): the CogVideoX video diffusion transformer with audio and identity conditioning; SAT release loader."""
