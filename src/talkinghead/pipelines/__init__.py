"""Engines: each turns a portrait + speech into frames. `warp` is the default CPU engine; the diffusion engines
are imported only when used. Which engines exist, and what each needs, is the registry's business
(`talkinghead.systems`)."""
from .warp import Animator

__all__ = ["Animator"]
