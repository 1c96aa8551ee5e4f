"""EMO (2024): the reference video net with speed layers and face locator, rendered from a `talkinghead train`
checkpoint."""
