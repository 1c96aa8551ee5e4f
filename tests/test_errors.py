"""Typed input errors: the library raises the InputError subclass that says what kind of mistake it is, with
the field to blame; the command line words that field as its flag, exits with code 2 and leaves no output."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.assets import portrait_path
from talkinghead.errors import InputError, NoFaceError, TooLongError, UnreadableMediaError, UnsupportedFormatError
from talkinghead.face import analyze
from talkinghead.interfaces.cli import main
from talkinghead.io import check_output_path, load_audio, load_image


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("error_inputs")
    fake_png = d / "notes.png"  # a text file with a picture's name
    fake_png.write_text("these are notes, not a picture\n" * 10)
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    faceless = d / "gradient.png"  # a smooth colour ramp: a real picture with no face in it
    Image.fromarray(np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)),
                              np.full((256, 256), 128, np.uint8)], -1)).save(faceless)
    tone = d / "tone.wav"  # 2 s of a quiet 220 Hz tone
    with wave.open(str(tone), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((3000 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)).astype(np.int16).tobytes())
    return {"fake_png": fake_png, "faceless": faceless, "tone": tone, "face": portrait_path("astronaut")}


def _animate(files, out: Path, capsys, image="face", *extra) -> tuple[int, str]:
    argv = ["animate", "--image", str(files[image]), "--audio", str(files["tone"]), "-o", str(out),
            "--size", "128", "--quiet", *extra]
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def _refused(code: int, err: str, out: Path, line: str) -> None:
    """Exit code 2, one error line (flag first) with its fix, no traceback, nothing written."""
    assert code == 2, err
    assert err.startswith(f"error: {line}"), err
    assert "how to fix:" in err and "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_an_undecodable_image_is_unreadable_media(files, tmp_path, capsys):
    with pytest.raises(UnreadableMediaError) as e:
        load_image(files["fake_png"])
    assert e.value.field == "image" and e.value.code == "unreadable_media"
    out = tmp_path / "out" / "a.mp4"
    out.parent.mkdir()
    code, err = _animate(files, out, capsys, "fake_png")
    _refused(code, err, out, f"--image {files['fake_png']} is not an image: its contents cannot be decoded as png")


def test_a_picture_without_a_face_is_no_face(files, tmp_path, capsys):
    with pytest.raises(NoFaceError) as e:
        analyze(load_image(files["faceless"]))
    assert e.value.field == "image" and e.value.code == "no_face"
    out = tmp_path / "out" / "a.mp4"
    out.parent.mkdir()
    code, err = _animate(files, out, capsys, "faceless")
    _refused(code, err, out, f"--image {files['faceless']}: no face found")


def test_an_output_format_we_do_not_write_is_unsupported(files, tmp_path, capsys):
    out = tmp_path / "out" / "a.xyz"
    with pytest.raises(UnsupportedFormatError) as e:
        check_output_path(out)
    assert e.value.field == "output" and e.value.code == "unsupported_format"
    out.parent.mkdir()
    code, err = _animate(files, out, capsys)
    _refused(code, err, out, "--output must be an .mp4 video, got 'a.xyz'")


def test_audio_over_the_limit_is_too_long(files, tmp_path, capsys):
    with pytest.raises(TooLongError) as e:
        load_audio(files["tone"], max_seconds=1)
    assert e.value.field == "audio" and e.value.code == "too_long"
    assert "--" not in e.value.message + e.value.hint  # the library names no CLI flag
    out = tmp_path / "out" / "a.mp4"
    out.parent.mkdir()
    code, err = _animate(files, out, capsys, "face", "--max-seconds", "1")
    _refused(code, err, out, f"--audio {files['tone']} is 2.0 s long, more than the limit of 1 s")


def test_every_subclass_is_an_input_error_with_its_own_code():
    kinds = (TooLongError, NoFaceError, UnreadableMediaError, UnsupportedFormatError)
    assert all(issubclass(k, InputError) for k in kinds)
    assert len({k.code for k in kinds} | {InputError.code}) == len(kinds) + 1
    e = NoFaceError("x.png: no face found", "use a photo of a face", field="image")
    assert e.text() == "image x.png: no face found" and e.text("--image") == "--image x.png: no face found"
