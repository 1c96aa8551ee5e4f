"""Reading the user's portrait: any common image file (or an array) -> an RGB uint8 `Portrait`.

Every bad input gets an `InputError` that says what is wrong and how to fix it. Large images are
downscaled (never refused); EXIF orientation is applied; alpha is composited onto white.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, UnreadableMediaError, UnsupportedFormatError
from ..types import Portrait

MAX_IMAGE_SIDE = 4096  # px; longer images are downscaled to this longest side
MIN_IMAGE_SIDE = 64  # px; smaller images are refused
SUPPORTED_IMAGE_FORMATS = ("jpg", "png", "webp", "bmp", "tiff")

_FORMATS_TEXT = ", ".join(SUPPORTED_IMAGE_FORMATS)
_FORMATS_HINT = "use a portrait photo saved as " + ", ".join(SUPPORTED_IMAGE_FORMATS[:-1]) + f" or {SUPPORTED_IMAGE_FORMATS[-1]}"
# suffixes of the formats above: a file named like one of them that will not decode is corrupt, not foreign
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def load_image(path: str | os.PathLike, field: str = "image") -> Portrait:
    """Read an image file into an RGB uint8 `Portrait` (EXIF orientation applied).

    Images whose longest side exceeds MAX_IMAGE_SIDE are downscaled with INTER_AREA.
    Raises InputError about `field` (the input's name) for a missing file, a directory, an image smaller
    than MIN_IMAGE_SIDE on a side; UnsupportedFormatError for a file in a format we do not read;
    UnreadableMediaError for an image file that is empty, corrupt or truncated.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} not found (no such file)", "check the path (and its spelling)", field=field)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an image", _FORMATS_HINT, field=field)
    if p.stat().st_size == 0:
        raise UnreadableMediaError(f"{p} is empty (0 bytes), not an image", _FORMATS_HINT, field=field)
    try:
        with warnings.catch_warnings():
            # Pillow warns about "decompression bombs" above ~89 Mpx; we downscale instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                _draft(img)
                img.load()
                frame = _to_rgb(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        suffix = p.suffix.lower()
        if suffix in _IMAGE_SUFFIXES:  # named as an image we read, but its bytes are not one
            raise UnreadableMediaError(f"{p} is not an image: its contents cannot be decoded as {suffix[1:]}",
                                       "re-export or re-download the image, or convert it to png", field=field) from None
        hint = _FORMATS_HINT
        if suffix in (".heic", ".heif", ".avif", ".svg", ".pdf"):
            hint = f"convert it to jpg or png first ({suffix} files are not supported)"
        raise UnsupportedFormatError(f"{p} is not an image in a supported format ({_FORMATS_TEXT})", hint,
                                     field=field) from None
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{p} is too large to load safely ({e})",
            f"resize it (a longest side of {MAX_IMAGE_SIDE} px or less is plenty)", field=field,
        ) from None
    except PermissionError:
        raise InputError(f"{p} cannot be read: permission denied", "check the file's permissions", field=field) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, KeyError, TypeError) as e:
        # Pillow reports truncated/corrupt data with a zoo of exception types.
        raise UnreadableMediaError(
            f"{p} cannot be decoded: the file is truncated or corrupt ({type(e).__name__}: {e})",
            "re-export or re-download the image, or convert it to png", field=field,
        ) from None
    return _finish(frame, str(p), field)


def as_portrait(obj, field: str = "image") -> Portrait:
    """Accept a Portrait, a path, a PIL image or a numpy array and return a checked `Portrait`.

    Arrays: (h, w, 3) uint8 RGB is the canonical form; (h, w) / (h, w, 1) grayscale and
    (h, w, 4) RGBA are converted; float arrays are taken to be in [0, 1]; uint16 in [0, 65535].
    Errors name `field`, the input the object was given as.
    """
    if isinstance(obj, Portrait):
        return _finish(np.asarray(obj.image), obj.source, field)
    if isinstance(obj, (str, os.PathLike)):
        return load_image(obj, field)
    if isinstance(obj, Image.Image):
        return _finish(_to_rgb(obj), getattr(obj, "filename", None) or None, field)
    try:
        arr = np.asarray(obj)
    except Exception:  # noqa: BLE001 - anything numpy can't take is simply not an image
        arr = None
    if arr is None or arr.dtype == object or arr.ndim not in (2, 3):
        raise InputError(
            f"must be an image (a path or an (h, w, 3) uint8 array), got {type(obj).__name__}",
            "pass a file path or a numpy array of shape (height, width, 3)", field=field,
        )
    return _finish(_array_to_rgb(arr), None, field)


# --------------------------------------------------------------------------------------------
def _draft(img: Image.Image) -> None:
    """For huge JPEGs let libjpeg decode at a reduced scale that still covers MAX_IMAGE_SIDE."""
    if img.format != "JPEG" or max(img.size) <= 2 * MAX_IMAGE_SIDE:
        return
    w, h = img.size
    s = MAX_IMAGE_SIDE / max(w, h)
    try:
        img.draft(img.mode, (max(1, int(np.ceil(w * s))), max(1, int(np.ceil(h * s)))))
    except Exception:  # noqa: BLE001 - draft is only an optimisation
        pass


def _to_rgb(img: Image.Image) -> np.ndarray:
    """PIL image (any mode) -> (h, w, 3) uint8 RGB with EXIF orientation applied."""
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the photo unusable
        pass
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA") if ("transparency" in img.info or mode == "PA") else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return np.asarray(img, dtype=np.uint8)
    if mode in _ALPHA_MODES:
        if mode != "RGBA":
            img = img.convert("RGBA")
        return _composite_on_white(np.asarray(img, dtype=np.uint8))
    if mode.startswith("I") or mode == "F":  # 16-bit / 32-bit grayscale: scale, don't clip
        return _array_to_rgb(np.asarray(img))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)  # L, 1, CMYK, YCbCr, LAB, HSV, ...


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.float32)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(a.max()) if a.size else 0.0
        if hi <= 1.0:
            a = a * 255.0
        elif hi > 255.0:
            a = a * (255.0 / (65535.0 if hi <= 65535.0 else hi))
        return np.clip(a + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.uint16:
            return (a >> 8).astype(np.uint8) if a.size else a.astype(np.uint8)
        a = a.astype(np.int64)
        hi = int(a.max()) if a.size else 0
        if hi > 255:
            div = 257.0 if hi <= 65535 else hi / 255.0
            return np.clip(a / div + 0.5, 0, 255).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported image data type {a.dtype}", "pass a uint8 RGB array")


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        g = _to_uint8(arr)
        return np.repeat(g[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return _to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return _composite_on_white(_to_uint8(arr))
    raise InputError(
        f"expected an image array of shape (h, w, 3), got shape {tuple(arr.shape)}",
        "pass an RGB array of shape (height, width, 3) and dtype uint8",
    )


def _finish(rgb: np.ndarray, source: str | None, field: str = "image") -> Portrait:
    """Check the size, downscale if huge, and return a contiguous (h, w, 3) uint8 Portrait."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        rgb = _array_to_rgb(rgb)
    rgb = _to_uint8(rgb)
    h, w = rgb.shape[:2]
    if max(h, w) > MAX_IMAGE_SIDE:
        s = MAX_IMAGE_SIDE / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        where = f"{source} is" if source else "is"
        raise InputError(
            f"{where} only {w}x{h} px, too small (at least {MIN_IMAGE_SIDE} px on each side)",
            "use a larger portrait (256 px or more per side gives good results)", field=field,
        )
    return Portrait(image=np.ascontiguousarray(rgb), source=source)
