"""Loopy (2024): EMO's net with inter/intra-clip temporal layers and audio-to-latents, rendered from a `talkinghead
train` checkpoint."""
