"""`talkinghead web` without a browser: engine availability, the controls' ranges against config.py,
a real render through the app's functions, and every user mistake arriving as one gr.Error."""
from __future__ import annotations

import sys
import wave
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from talkinghead.assets import portrait_path
from talkinghead.audio.tts import synthesize
from talkinghead.config import DiffusionConfig, MotionConfig, RenderConfig, config_from_options
from talkinghead.errors import CheckpointError, InputError
from talkinghead.interfaces import web
from talkinghead.io import load_image, probe
from talkinghead.systems import engine_names

TINY = {"size": 128}  # outputs we only need to be valid, kept small for speed


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """float samples in [-1, 1] -> 16-bit mono wav (stdlib wave)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory) -> Path:
    """About a second of espeak-ng speech as a wav file, like an upload."""
    speech = synthesize("Hello there.", voice="en-us")
    return _write_wav(tmp_path_factory.mktemp("web_inputs") / "hello.wav", speech.samples, speech.sample_rate)


@pytest.fixture(scope="module")
def face() -> str:
    return str(portrait_path("astronaut"))


# ------------------------------------------------------------------------------------------ engines
def _fake_release(root: Path, variant: str = "hallo", leave_out: str | None = None) -> Path:
    """Empty placeholders for the first accepted name of every file the loaders require."""
    from talkinghead.systems.hallo.release import release_files

    for label, paths in release_files(variant).items():
        if label != leave_out:
            (root / paths[0]).parent.mkdir(parents=True, exist_ok=True)
            (root / paths[0]).touch()
    return root


def test_engine_status_without_a_folder_names_the_flag_and_the_release():
    status = web.engine_status(None)
    assert status["warp"] is None
    for variant in ("hallo", "hallo2"):
        assert "--checkpoint-dir" in status[variant] and "pretrained_models/" in status[variant]
        assert f"fudan-generative-ai/{variant}" in status[variant]


def test_engine_status_of_an_incomplete_folder_lists_what_is_missing(tmp_path):
    (tmp_path / "pretrained_models" / "hallo").mkdir(parents=True)
    (tmp_path / "pretrained_models" / "hallo" / "net.pth").touch()
    status = web.engine_status(tmp_path)  # a checkout holding pretrained_models/ works as the folder itself does
    assert status["warp"] is None
    assert "missing:" in status["hallo"] and "hallo/net.pth" not in status["hallo"]
    for name in ("sd-vae-ft-mse/config.json", "diffusion_pytorch_model.safetensors", "preprocessor_config.json",
                 "wav2vec2-base-960h/model.safetensors or wav2vec/wav2vec2-base-960h/pytorch_model.bin"):
        assert name in status["hallo"]
    assert "hallo2/net.pth or hallo2/net.safetensors" in status["hallo2"]
    assert "is not a folder" in web.engine_status(tmp_path / "nowhere")["hallo"]


def test_engine_status_of_a_complete_folder(tmp_path):
    _fake_release(tmp_path, "hallo")
    status = web.engine_status(tmp_path)
    assert status["warp"] is None and status["hallo"] is None
    assert status["hallo2"].endswith("(missing: hallo2/net.pth or hallo2/net.safetensors)")


def _missing_reports(root: Path) -> list[str]:
    """The files the real loaders say `root` lacks, before they read any weights (their file checks)."""
    from talkinghead.audio.wav2vec import load_wav2vec
    from talkinghead.errors import MissingFilesError
    from talkinghead.models.checkpoints import load_vae_folder
    from talkinghead.systems.hallo.release import load_release

    reports: list[str] = []
    for load in (lambda: load_release(root, "hallo"), lambda: load_vae_folder(root / "sd-vae-ft-mse"),
                 lambda: load_wav2vec(root / "wav2vec" / "wav2vec2-base-960h")):
        try:
            load()
        except MissingFilesError as e:
            reports.extend(e.missing)
        except (CheckpointError, ValueError):  # files present; the empty placeholders' contents are refused
            pass
    return reports


def test_required_files_are_the_loaders_own(tmp_path):
    """engine_status reads the loader's own file list: with every file present the loaders find none missing,
    and leaving out any one makes a loader name it, as engine_status does."""
    from talkinghead.systems.hallo.release import release_files

    assert _missing_reports(_fake_release(tmp_path / "complete")) == []
    for label, paths in release_files("hallo").items():
        root = _fake_release(tmp_path / label.replace(" ", "_"), leave_out=label)
        assert any(paths[0] in m for m in _missing_reports(root)), (label, _missing_reports(root))
        assert paths[0] in web.engine_status(root)["hallo"]


# ------------------------------------------------------------------------------------------ controls
def test_app_shows_every_control_with_its_declared_range_and_default():
    from talkinghead.config import controls

    demo = web.build_app()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    motion, render = MotionConfig(), RenderConfig()
    for spec in controls():
        if not web.shows(spec):
            assert spec.flag not in by_id, spec.flag
            continue
        component = by_id[spec.flag]
        if isinstance(component, web.gr.Slider):
            assert (component.minimum, component.maximum, component.value) == (*spec.meta.range, spec.default)
        elif isinstance(component, web.gr.Radio):
            assert [v for _, v in component.choices] == list(spec.meta.choices) and component.value == spec.default
    assert by_id["gaze"].value == motion.gaze and by_id["lips-only"].value is motion.lips_only
    assert by_id["seed"].value == motion.seed and by_id["crop"].value == render.crop
    assert by_id["face-index"].value == "" and render.face_index is None  # "" parses to None
    assert config_from_options({n: by_id[n].value for n in ("face-index", "steps", "guidance-scale", "scheduler",
                                                            "dtype")}).to_dict()["diffusion"] == vars(DiffusionConfig())
    assert web.DEFAULT_VOICE in [value for _, value in by_id["voice"].choices]
    assert [value for _, value in by_id["engine"].choices] == engine_names()  # the registry's, in its order
    assert "hallo (unavailable)" in [label for label, _ in by_id["engine"].choices]
    assert "--checkpoint-dir" in by_id["engine-status"].value
    for name in ("portrait", "speech", "text", "generate", "result", "sheet", "card"):
        assert name in by_id


# ------------------------------------------------------------------------------------------ rendering
def test_generate_renders_a_video_a_sheet_and_a_card(face, tmp_path):
    video, sheet, card = web.generate(face, None, "Hello there.", voice="en-us",
                                      options={**TINY, "head-motion": 0.5}, workdir=tmp_path)
    info = probe(video)
    assert (info["video_codec"], info["width"], info["height"]) == ("h264", 128, 128)
    assert info["n_frames"] >= 10 and info["audio_codec"] == "aac"
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 0
    assert card.startswith(f"`talkinghead.mp4`: {info['n_frames']} frames")
    assert "engine warp; changed: head-motion 0.5, size 128\n" in card
    assert "| container | frames | " in card and "unavailable" not in card  # the eval card's table
    assert Path(video).parent.parent == tmp_path


def test_uploaded_audio_with_a_transcript(face, hello_wav, tmp_path):
    """Typed text that looks like a file name is the transcript itself, never a path on the server."""
    with pytest.warns(UserWarning, match="could not align"):  # shown in the page as gr.Warning
        job = web.render(face, str(hello_wav), "missing.txt", options=TINY, workdir=tmp_path)
    assert probe(job.video)["audio_codec"] == "aac" and job.audio == str(hello_wav)
    assert job.text == "missing.txt" and any("could not align" in w for w in job.warnings)
    first = job.video.parent
    again = web.render(face, str(hello_wav), "", options=TINY, workdir=tmp_path)
    assert not first.exists() and again.video.is_file()  # a session keeps only its latest render


def test_library_warnings_reach_the_page_without_server_paths(hello_wav, tmp_path):
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([load_image(portrait_path(n)).image[:512, :512] for n in
                                    ("astronaut", "grace_hopper")], axis=1)).save(pair)
    with pytest.warns(UserWarning, match="has 2 faces; animating the largest"):
        job = web.render(str(pair), str(hello_wav), options=TINY, workdir=tmp_path / "out")
    assert job.warnings[0].startswith("pair.png has 2 faces") and str(tmp_path) not in job.warnings[0]
    assert not web.render(str(pair), str(hello_wav), options={**TINY, "face-index": "1"},  # as the text box sends
                          workdir=tmp_path / "out").warnings


def test_eval_card_reports_why_it_is_missing(face, tmp_path, monkeypatch):
    job = web.Job(tmp_path / "x.mp4", tmp_path / "x.png", face, None, "hi", summary="summary line")
    monkeypatch.setitem(sys.modules, "talkinghead.eval.card", None)  # as if the module were not there
    assert web.eval_card(job).startswith("summary line\n\neval card unavailable: ")


# ------------------------------------------------------------------------------------------ mistakes
def _error(**kwargs) -> str:
    with pytest.raises(gr.Error) as info:
        web.render(**{"image": None, "options": TINY, **kwargs})
    assert "Traceback" not in info.value.message
    return info.value.message


def test_user_mistakes_are_one_message_with_the_fix(face, hello_wav, tmp_path):
    assert _error(text="hi", workdir=tmp_path).startswith("no portrait — how to fix: upload a portrait")
    assert _error(image=face, workdir=tmp_path).startswith("no speech — how to fix: upload or record audio")
    assert "head motion: must be between 0 and 2" in _error(image=face, text="hi", workdir=tmp_path,
                                                                 options={"head-motion": 5})
    assert "voice: 'xx-nope' is not a known voice" in _error(image=face, text="hi", voice="xx-nope", workdir=tmp_path)
    assert "engine hallo is unavailable: needs --checkpoint-dir" in _error(image=face, text="hi", engine="hallo",
                                                                           workdir=tmp_path)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a picture\n")
    with pytest.raises(InputError) as expected:
        load_image(not_image)
    assert _error(image=str(not_image), text="hi", workdir=tmp_path).startswith(
        expected.value.text("image:").replace(str(not_image), "notes.png"))
    assert _error(image=face, audio=str(not_image), workdir=tmp_path).startswith(
        "audio: notes.png is not an audio file (it is an image) — how to fix: use a wav")  # no server paths shown
    assert not list(tmp_path.glob("run-*/*.mp4"))  # nothing half-written left behind
