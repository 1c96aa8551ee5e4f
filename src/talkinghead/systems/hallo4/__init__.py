"""Hallo4 (2025): the Wan2.1-VACE transformer with audio, trained by SFT and DPO; official release loader."""
