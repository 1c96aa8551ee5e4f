"""Engines: each turns a portrait + speech into frames. `warp` is the default CPU engine; `hallo` and
`hallo2` run the official diffusion models from a local release folder (imported only when used)."""
from .warp import Animator


def _hallo(portrait, config=None, warn=True):
    from .hallo_engine import HalloAnimator

    return HalloAnimator(portrait, config, warn)


def _hallo2(portrait, config=None, warn=True):
    from .hallo_engine import Hallo2Animator

    return Hallo2Animator(portrait, config, warn)


ENGINES = {"warp": Animator, "hallo": _hallo, "hallo2": _hallo2}

__all__ = ["Animator", "ENGINES"]
