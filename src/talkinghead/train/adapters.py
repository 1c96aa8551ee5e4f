"""Which training adapter trains which system (the `system.name` of a stage config), as "module:Class".

Adapters are imported only when a stage of their system is built, so a config of one system never pays for
another's imports.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import InputError

ADAPTERS = {
    "emo": "talkinghead.train.systems:System",
    "loopy": "talkinghead.train.systems:System",
    "hallo": "talkinghead.train.systems:System",
    "hallo2": "talkinghead.train.systems:System",
    "echomimic": "talkinghead.train.systems:System",
    "emo2": "talkinghead.train.systems_emo2:EMO2System",
    "hallo3": "talkinghead.train.systems_dit:Hallo3System",
    "hallo4": "talkinghead.train.systems_dit:Hallo4System",
    "skyreels_a1": "talkinghead.train.systems_dit:SkyReelsA1System",
    "skyreels_a2": "talkinghead.train.systems_dit:SkyReelsA2System",
    "midas": "talkinghead.train.systems_midas:MidasSystem",
}


def adapter_class(name: str):
    """The adapter class that trains system `name`."""
    if name not in ADAPTERS:
        raise InputError(f"unknown system {name!r}", f"set system.name to one of: {', '.join(ADAPTERS)}")
    module, _, attr = ADAPTERS[name].partition(":")
    return getattr(import_module(module), attr)


__all__ = ["ADAPTERS", "adapter_class"]
