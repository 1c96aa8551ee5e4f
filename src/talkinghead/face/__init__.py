"""Face analysis on the portrait: landmarks, crop, regions."""
from .landmarks import analyze, detect_all, prepare

__all__ = ["analyze", "detect_all", "prepare"]
