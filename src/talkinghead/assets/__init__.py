"""Bundled media: real portraits from packages we depend on, and public-domain LibriVox speech."""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SPEECH = {  # name -> (wav, transcript)
    "librivox_0870": (HERE / "librivox_0870.wav", HERE / "librivox_0870.txt"),
    "librivox_0880": (HERE / "librivox_0880.wav", HERE / "librivox_0880.txt"),
}


def portrait(name: str = "astronaut") -> np.ndarray:
    """RGB uint8 portrait: "astronaut" (skimage, public domain) or "grace_hopper" (matplotlib)."""
    if name == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            return np.asarray(im.convert("RGB"))
    raise KeyError(f"unknown portrait {name!r}; choose astronaut or grace_hopper")


def portrait_path(name: str = "astronaut") -> Path:
    """A file path for a bundled portrait (grace_hopper ships as a file; astronaut is written once)."""
    if name == "grace_hopper":
        import matplotlib.cbook

        return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    import tempfile

    from PIL import Image

    p = Path(tempfile.gettempdir()) / f"talkinghead-{name}.png"
    if not p.exists():
        tmp = p.with_suffix(".part.png")
        Image.fromarray(portrait(name)).save(tmp)
        tmp.replace(p)
    return p


def speech_path(name: str = "librivox_0870") -> tuple[Path, str]:
    wav, txt = SPEECH[name]
    return wav, txt.read_text().strip()
