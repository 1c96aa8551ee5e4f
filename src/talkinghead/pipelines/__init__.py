"""Engines: each turns a portrait + speech into frames. `warp` is the default CPU engine."""
from .warp import Animator

ENGINES = {"warp": Animator}

__all__ = ["Animator", "ENGINES"]
