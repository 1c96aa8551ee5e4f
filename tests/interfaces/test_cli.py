"""The CLI's promise: every bad input gets ONE clear message (what is wrong + "how to fix"),
exit code 2, no traceback and no output file (no .mp4, no leftover .part files).

Most cases call `talkinghead.interfaces.cli.main` in-process (fast); one runs the installed
`talkinghead` entry point in a subprocess to prove the exit code and stderr end-to-end.
"""
from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from talkinghead.assets import portrait, portrait_path, speech_path
from talkinghead.face.landmarks import MIN_FACE_WIDTH
from talkinghead.interfaces.cli import main
from talkinghead.io import probe

SMALL = ["--size", "128", "--quiet"]  # outputs we only need to exist, kept tiny for speed


# ------------------------------------------------------------------------------------- inputs
def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Every input file once per module, in a folder apart from the output folders."""
    d = tmp_path_factory.mktemp("cli_inputs")
    astro = portrait("astronaut")
    files = {"face": portrait_path("astronaut"), "speech": speech_path("librivox_0880")[0]}

    files["text"] = d / "notes.txt"
    files["text"].write_text("this is not a picture\n")
    files["text_as_jpg"] = d / "notes.jpg"  # a text file with an image's name
    files["text_as_jpg"].write_text("this is not a picture either\n")

    good_jpg = d / "full.jpg"
    Image.fromarray(astro).save(good_jpg, quality=90)
    data = good_jpg.read_bytes()
    files["truncated"] = d / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])

    ramp = np.linspace(0, 255, 512, dtype=np.uint8)
    gradient = np.stack([np.tile(ramp, (512, 1)), np.tile(ramp[:, None], (1, 512)), np.full((512, 512), 128, np.uint8)], -1)
    files["no_face"] = d / "gradient.png"
    Image.fromarray(gradient).save(files["no_face"])

    # FaceMesh cannot find the astronaut shrunk inside a big canvas (it loses it below ~100 px
    # faces), but it still finds her in the shrunk picture alone: 200x200 px -> a ~36 px face.
    files["tiny_face"] = d / "tiny_face.png"
    Image.fromarray(cv2.resize(astro, (200, 200), interpolation=cv2.INTER_AREA)).save(files["tiny_face"])

    # Two head-and-shoulders crops side by side at the same height (FaceMesh misses the smaller
    # face when whole pictures are tiled: it detects on a 128 px copy of the image).
    heads = [astro[7:240, 108:341], portrait("grace_hopper")[11:453, 43:485]]
    heads = [cv2.resize(x, (256, 256), interpolation=cv2.INTER_AREA) for x in heads]
    files["two_faces"] = d / "two_faces.png"
    Image.fromarray(np.concatenate(heads, axis=1)).save(files["two_faces"])

    files["png_as_audio"] = files["no_face"]
    files["empty_wav"] = _write_wav(d / "empty.wav", np.zeros(0))
    files["silence"] = _write_wav(d / "silence.wav", np.zeros(2 * 16000))
    return files


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


# ------------------------------------------------------------------------------------ helpers
def cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_refused(code, err, phrase, out_dir: Path, before: list[str] | None = None):
    assert code == 2, err
    assert "Traceback" not in err, err
    assert phrase.lower() in err.lower(), err
    assert err.count("error:") == 1, err  # ONE message
    assert err.count("how to fix") == 1, err
    assert tree(out_dir) == (before or []), "a bad input left a file behind"


def animate(inputs, out, *extra, image="face", audio="speech"):
    return ["animate", inputs[image], inputs[audio], "-o", out, *extra]


# ---------------------------------------------------------------------------------- bad images
@pytest.mark.parametrize("image, phrase", [
    ("text", "is not an image"),
    ("text_as_jpg", "is not an image"),
    ("truncated", "truncated or corrupt"),
    ("no_face", "no face found"),
    ("tiny_face", "too small"),
])
def test_bad_image(inputs, out_dir, capsys, image, phrase):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", *SMALL, image=image), capsys)
    assert_refused(code, err, phrase, out_dir)
    if image == "tiny_face":
        assert f"at least {MIN_FACE_WIDTH} px" in err


def test_missing_image(inputs, out_dir, capsys):
    code, _, err = cli(["animate", "--image", out_dir.parent / "nope.png", "--audio", inputs["speech"],
                        "-o", out_dir / "a.mp4"], capsys)
    assert_refused(code, err, "--image", out_dir)
    assert "nope.png not found" in err


# ---------------------------------------------------------------------------------- bad audio
@pytest.mark.parametrize("audio, extra, phrase", [
    ("png_as_audio", [], "is not an audio file"),
    ("empty_wav", [], "empty audio"),
    ("speech", ["--max-seconds", "1"], "more than the limit of 1 s"),
])
def test_bad_audio(inputs, out_dir, capsys, audio, extra, phrase):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", *SMALL, *extra, audio=audio), capsys)
    assert_refused(code, err, phrase, out_dir)


# --------------------------------------------------------------------------------- bad output
def test_output_folder_missing(inputs, out_dir, capsys):
    code, _, err = cli(animate(inputs, out_dir / "missing" / "a.mp4", *SMALL), capsys)
    assert_refused(code, err, "does not exist", out_dir)


def test_output_is_a_directory(inputs, out_dir, capsys):
    (out_dir / "video.mp4").mkdir()
    code, _, err = cli(animate(inputs, out_dir / "video.mp4", *SMALL), capsys)
    assert_refused(code, err, "is a directory", out_dir, before=["video.mp4"])


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_output_folder_not_writable(inputs, out_dir, capsys):
    locked = out_dir / "locked"
    locked.mkdir(mode=0o555)
    try:
        code, _, err = cli(animate(inputs, locked / "a.mp4", *SMALL), capsys)
    finally:
        locked.chmod(0o755)
    assert_refused(code, err, "not writable", out_dir, before=["locked"])


@pytest.mark.parametrize("name", ["a.avi", "a.gif", "a"])
def test_output_not_mp4(inputs, out_dir, capsys, name):
    code, _, err = cli(animate(inputs, out_dir / name, *SMALL), capsys)
    assert_refused(code, err, "must be an .mp4", out_dir)


def test_preview_bad_extension(inputs, out_dir, capsys):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", *SMALL, "--preview", out_dir / "sheet.gif"), capsys)
    assert_refused(code, err, "--preview", out_dir)


# ------------------------------------------------------------------------------ bad controls
@pytest.mark.parametrize("flag, value, phrase", [
    ("--head-motion", "3", "--head-motion must be between"),
    ("--blink-rate", "-1", "--blink-rate must be between"),
    ("--gaze", "sideways", "--gaze: invalid choice"),
    ("--crop", "circle", "--crop: invalid choice"),
    ("--mouth-scale", "abc", "--mouth-scale needs a number"),
    ("--smile", "nan", "--smile must be a number"),
    ("--size", "10", "--size must be between"),
    ("--size", "300.5", "--size needs a whole number"),
    ("--fps", "0", "--fps must be between"),
    ("--face-index", "-1", "--face-index must be at least 0"),
    ("--face-index", "1.5", "--face-index needs a whole number"),
    ("--seed", "-3", "--seed must be at least 0"),
    ("--max-seconds", "0", "--max-seconds must be between"),
])
def test_bad_control(inputs, out_dir, capsys, flag, value, phrase):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", "--quiet", f"{flag}={value}"), capsys)
    assert_refused(code, err, phrase, out_dir)


@pytest.mark.parametrize("argv, phrase", [
    (["animate", "--audio", "x.wav", "-o", "a.mp4"], "IMAGE (or --image)"),  # an input missing
    (["animate", "x.png", "x.wav", "--image", "y.png", "-o", "a.mp4"], "too many inputs"),  # one given twice
    (["animate", "x.png", "x.wav", "-o", "a.mp4", "--wobble", "1"], "unrecognized"),
    (["dance"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors(out_dir, capsys, argv, phrase):
    code, _, err = cli(argv, capsys)
    assert_refused(code, err, phrase, out_dir)


# -------------------------------------------------------------------------------- bad text
def test_text_file_missing(inputs, out_dir, capsys):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", *SMALL, "--text", out_dir.parent / "missing.txt"), capsys)
    assert_refused(code, err, "does not exist", out_dir)


def test_text_empty(inputs, out_dir, capsys):
    code, _, err = cli(animate(inputs, out_dir / "a.mp4", *SMALL, "--text", "   "), capsys)
    assert_refused(code, err, "--text is empty", out_dir)


def test_say_unknown_voice(inputs, out_dir, capsys):
    code, _, err = cli(["say", "hello", inputs["face"], "-o", out_dir / "s.mp4",
                        "--voice", "xx-nonexistent", *SMALL], capsys)
    assert_refused(code, err, "--voice 'xx-nonexistent' is not a known voice", out_dir)
    assert "talkinghead voices" in err


@pytest.mark.parametrize("text", ["", "   "])
def test_say_empty_text(inputs, out_dir, capsys, text):
    code, _, err = cli(["say", text, inputs["face"], "-o", out_dir / "s.mp4", *SMALL], capsys)
    assert_refused(code, err, "text is empty", out_dir)


def test_demo_bad_output(out_dir, capsys):
    code, _, err = cli(["demo", "-o", out_dir / "demo.mov", "--quiet"], capsys)
    assert_refused(code, err, "must be an .mp4", out_dir)


# ---------------------------------------------------------------------------- several faces
def test_several_faces_warns_and_renders(inputs, out_dir, capsys):
    out = out_dir / "two.mp4"
    code, _, err = cli(animate(inputs, out, *SMALL, image="two_faces", audio="silence"), capsys)
    assert code == 0, err
    assert "2 faces" in err and "--face-index" in err
    assert "Traceback" not in err
    assert out.is_file() and tree(out_dir) == ["two.mp4"]


def test_several_faces_index_out_of_range(inputs, out_dir, capsys):
    code, _, err = cli(animate(inputs, out_dir / "two.mp4", *SMALL, "--face-index", "5", image="two_faces"), capsys)
    assert_refused(code, err, "--face-index is 5", out_dir)
    assert "2 face(s)" in err


# ------------------------------------------------------------------------------- end-to-end
def test_entry_point_subprocess(inputs, out_dir):
    exe = Path(sys.executable).with_name("talkinghead")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "talkinghead.interfaces.cli"]
    r = subprocess.run([*cmd, "animate", "--image", str(inputs["text"]), "--audio", str(inputs["speech"]),
                        "-o", str(out_dir / "a.mp4")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "is not an image" in r.stderr and "how to fix" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert tree(out_dir) == []


# ---------------------------------------------------------------------------------- it works
def test_animate_smoke(inputs, out_dir, capsys):
    out = out_dir / "talk.mp4"
    code, stdout, err = cli(animate(inputs, out, "--size", "256", "--quiet"), capsys)
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err
    info = probe(out)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"]) == (256, 256)
    assert abs(info["video_duration"] - 3.0) < 0.3
    assert tree(out_dir) == ["talk.mp4"]  # no .part files left


def test_animate_silent_audio(inputs, out_dir, capsys):
    out = out_dir / "quiet.mp4"
    code, _, err = cli(animate(inputs, out, *SMALL, audio="silence"), capsys)
    assert code == 0, err
    info = probe(out)
    assert info["video_codec"] == "h264" and abs(info["video_duration"] - 2.0) < 0.2
    assert tree(out_dir) == ["quiet.mp4"]


def test_say_smoke(inputs, out_dir, capsys):
    out = out_dir / "hallo.mp4"
    code, _, err = cli(["say", "hello there", inputs["face"], "-o", out, "--voice", "de",
                        "--size", "256", "--preview", out_dir / "sheet.png"], capsys)
    assert code == 0, err
    assert "wrote" in err  # the summary line (not --quiet)
    info = probe(out)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac" and info["width"] == 256
    assert tree(out_dir) == ["hallo.mp4", "sheet.png"]


def test_demo_smoke(out_dir, capsys):
    out = out_dir / "demo.mp4"
    code, _, err = cli(["demo", "-o", out, "--quiet"], capsys)
    assert code == 0, err
    info = probe(out)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac" and info["video_duration"] > 2
    assert tree(out_dir) == ["demo.mp4"]


def test_voices_lists_languages(capsys):
    code, stdout, err = cli(["voices"], capsys)
    assert code == 0, err
    voices = stdout.split()
    assert "en-us" in voices and "de" in voices
