"""talkinghead.io.image: any common image -> RGB uint8 Portrait, and a clear error otherwise."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from talkinghead.errors import InputError, UnreadableMediaError, UnsupportedFormatError
from talkinghead.io import MAX_IMAGE_SIDE, as_portrait, load_image
from talkinghead.types import Portrait


def gradient(w=160, h=120) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], axis=2).astype(np.uint8)


def check_rgb(p: Portrait, w: int, h: int) -> None:
    assert isinstance(p, Portrait)
    assert p.image.shape == (h, w, 3)
    assert p.image.dtype == np.uint8
    assert p.image.flags.c_contiguous
    assert p.size == (w, h)


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp"])
def test_lossless_formats_round_trip(tmp_path, ext):
    img = gradient()
    path = tmp_path / f"face.{ext}"
    Image.fromarray(img).save(path, **({"lossless": True} if ext == "webp" else {}))
    p = load_image(path)
    check_rgb(p, 160, 120)
    np.testing.assert_array_equal(p.image, img)
    assert p.source == str(path)


def test_jpeg(tmp_path):
    img = gradient()
    Image.fromarray(img).save(tmp_path / "face.jpg", quality=95)
    p = load_image(tmp_path / "face.jpg")
    check_rgb(p, 160, 120)
    assert np.abs(p.image.astype(int) - img).mean() < 3


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :50, 3] = 255  # left half opaque red-ish, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    p = load_image(tmp_path / "a.png")
    check_rgb(p, 100, 100)
    assert tuple(p.image[50, 10]) == (200, 0, 0)
    assert tuple(p.image[50, 90]) == (255, 255, 255)


def test_grayscale_palette_and_16bit(tmp_path):
    g = (np.arange(100 * 80).reshape(80, 100) % 256).astype(np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    p = load_image(tmp_path / "g.png")
    check_rgb(p, 100, 80)
    assert np.array_equal(p.image[..., 0], g) and np.array_equal(p.image[..., 2], g)

    Image.fromarray(gradient()).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "p.png")
    check_rgb(load_image(tmp_path / "p.png"), 160, 120)

    idx = np.zeros((80, 100), np.uint8)
    idx[:, 50:] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "pt.png", transparency=1)  # palette index 1 is transparent
    pt = load_image(tmp_path / "pt.png")
    assert tuple(pt.image[0, 0]) == (255, 0, 0) and tuple(pt.image[0, 90]) == (255, 255, 255)

    g16 = np.full((80, 100), 30000, np.uint16)  # mid-grey in 16 bits: scaled, not clipped to white
    Image.fromarray(g16).save(tmp_path / "g16.png")
    p16 = load_image(tmp_path / "g16.png")
    check_rgb(p16, 100, 80)
    assert 110 <= int(p16.image[0, 0, 0]) <= 122


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((100, 200, 3), np.uint8)  # stored landscape, 200 wide: left half red, right blue
    img[:, :100] = (255, 0, 0)
    img[:, 100:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    p = load_image(tmp_path / "phone.jpg")
    check_rgb(p, 100, 200)  # displayed portrait
    top, bottom = p.image[20, 50].astype(int), p.image[180, 50].astype(int)
    assert top[0] > 200 and top[2] < 50  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_huge_image_is_downscaled(tmp_path):
    Image.new("RGB", (5000, 3000), (10, 120, 200)).save(tmp_path / "huge.png", compress_level=1)
    p = load_image(tmp_path / "huge.png")
    check_rgb(p, MAX_IMAGE_SIDE, 2458)
    assert tuple(p.image[100, 100]) == (10, 120, 200)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.txt").write_text("this is not an image\n" * 20)
    with pytest.raises(UnsupportedFormatError) as e:  # a text file: a format we do not read
        load_image(tmp_path / "notes.txt")
    assert e.value.field == "image"
    msg = e.value.message
    assert "not an image" in msg
    for fmt in ("jpg", "png", "webp", "bmp", "tiff"):
        assert fmt in msg
    assert e.value.hint

    wav = tmp_path / "voice.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200))
    with pytest.raises(InputError, match="not an image"):
        load_image(wav)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableMediaError) as e:
        load_image(tmp_path / "cut.jpg", field="reference")
    assert "truncated or corrupt" in e.value.message and e.value.field == "reference"
    (tmp_path / "text.png").write_text("this is not an image\n" * 20)  # named as a png, but not one
    with pytest.raises(UnreadableMediaError, match="cannot be decoded as png"):
        load_image(tmp_path / "text.png")


def test_missing_directory_empty_and_tiny(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "zero.png")
    Image.new("RGB", (50, 200)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "tiny.png")


def test_as_portrait_arrays():
    img = gradient()
    p = as_portrait(img)
    check_rgb(p, 160, 120)
    np.testing.assert_array_equal(p.image, img)
    assert as_portrait(p).image is not None

    gray = as_portrait(img[..., 0])
    check_rgb(gray, 160, 120)
    floats = as_portrait(img.astype(np.float32) / 255.0)
    assert np.abs(floats.image.astype(int) - img).max() <= 1
    rgba = as_portrait(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]))
    np.testing.assert_array_equal(rgba.image, img)
    big = as_portrait(np.zeros((5000, 100, 3), np.uint8))
    check_rgb(big, 82, 4096)

    with pytest.raises(InputError, match="too small"):
        as_portrait(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="shape"):
        as_portrait(np.zeros((100, 100, 5), np.uint8))
    with pytest.raises(InputError):
        as_portrait(12)


def test_as_portrait_path(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "f.png")
    check_rgb(as_portrait(tmp_path / "f.png"), 160, 120)
    check_rgb(as_portrait(str(tmp_path / "f.png")), 160, 120)
