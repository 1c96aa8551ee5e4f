"""MIDAS (2025): an autoregressive transformer over a deep-compression video autoencoder with a diffusion head."""
