"""Rendering for the warp engine: face rig, mesh warp, mouth interior."""
from .warp import WarpRenderer

__all__ = ["WarpRenderer"]
