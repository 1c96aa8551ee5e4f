"""Hallo2 (2024): Hallo's net over long videos (motion-frame augmentation, segment-wise audio) and its VQ
super-resolution."""
