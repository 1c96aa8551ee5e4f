"""Which training adapter trains which system (the `system.name` of a stage config), as "module:Class".

Adapters are imported only when a stage of their system is built, so a config of one system never pays for
another's imports.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import InputError

ADAPTERS = {
    "emo": "talkinghead.systems.unet_adapter:System",
    "loopy": "talkinghead.systems.unet_adapter:System",
    "hallo": "talkinghead.systems.unet_adapter:System",
    "hallo2": "talkinghead.systems.unet_adapter:System",
    "echomimic": "talkinghead.systems.unet_adapter:System",
    "emo2": "talkinghead.systems.emo2.train:EMO2System",
    "hallo3": "talkinghead.systems.hallo3.train:Hallo3System",
    "hallo4": "talkinghead.systems.hallo4.train:Hallo4System",
    "skyreels_a1": "talkinghead.systems.skyreels_a1.train:SkyReelsA1System",
    "skyreels_a2": "talkinghead.systems.skyreels_a2.train:SkyReelsA2System",
    "midas": "talkinghead.systems.midas.train:MidasSystem",
}


def adapter_class(name: str):
    """The adapter class that trains system `name`."""
    if name not in ADAPTERS:
        raise InputError(f"unknown system {name!r}", f"set system.name to one of: {', '.join(ADAPTERS)}")
    module, _, attr = ADAPTERS[name].partition(":")
    return getattr(import_module(module), attr)


__all__ = ["ADAPTERS", "adapter_class"]
