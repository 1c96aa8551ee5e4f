"""`--engine echomimic` end to end on the tiny release folder of the shared reference data (the official
`pretrained_weights/` layout), through the real CLI, MediaPipe, the whisper front end and PyAV: audio-driven,
and landmark-driven from a landmark file and from a driving video."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from talkinghead.io import probe
from tests.support import cli_exit_code, fixture


@pytest.fixture(scope="module")
def release() -> Path:
    return fixture("echomimic", "echomimic_tiny")


def _argv(release, wav, out, *extra):
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", "echomimic", "--checkpoint-dir", str(release), "--image",
            str(portrait_path("astronaut")), "--audio", str(wav), "--size", "128", "--steps", "2", "-o", str(out),
            "--quiet", *extra]


def _frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_audio_driven_video_has_the_audio_length_and_repeats_with_the_seed(release, short_wav, tmp_path):
    a, again, other = tmp_path / "a.mp4", tmp_path / "a2.mp4", tmp_path / "b.mp4"
    assert cli_exit_code(_argv(release, short_wav, a, "--seed", "420")) == 0
    info = probe(a)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["n_frames"] == 23  # ceil(0.9 s * 25 fps); the official extra windows past the audio are dropped
    assert info["audio_codec"] and info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert cli_exit_code(_argv(release, short_wav, again, "--seed", "420")) == 0
    assert np.array_equal(_frames(a), _frames(again))
    assert cli_exit_code(_argv(release, short_wav, other, "--seed", "1", "--fps", "24", "--scheduler", "dpm")) == 0
    assert probe(other)["n_frames"] == 22  # ceil(0.9 s * 24 fps)


def test_window_batch_gives_the_frames_of_one_window_per_call(release, short_wav):
    """Before encoding (H.264 would magnify a rounding difference), 4 windows per UNet call render the frames
    of the official one window per call, up to one grey level."""
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.echomimic.engine import EchoMimicAnimator

    portrait, speech = load_image(portrait_path("astronaut")), load_audio(short_wav)

    def render(window_batch: int) -> np.ndarray:
        config = AnimateConfig()
        config.render.size, config.motion.seed = 128, 420
        d = config.diffusion
        d.checkpoint_dir, d.steps, d.window_batch = str(release), 2, window_batch
        return np.stack(list(EchoMimicAnimator(portrait, config, warn=False).frames(speech))).astype(int)

    one, batched = render(1), render(4)
    assert one.shape == (23, 128, 128, 3)
    assert np.abs(one - batched).max() <= 1


def test_landmark_driven_from_a_landmark_file_and_a_driving_video(release, short_wav, tmp_path):
    from talkinghead.assets import portrait_path
    from talkinghead.face.landmarks import prepare
    from talkinghead.io.image import load_image

    _, face = prepare(load_image(portrait_path("astronaut")), 128, "face")  # the portrait as the engine crops it
    drift = np.linspace(0, 6, 23)[:, None, None] * np.array([1.0, 0.0, 0.0])
    np.save(tmp_path / "marks.npy", (face.landmarks[None] + drift).astype(np.float32))
    audio_driven, from_file = tmp_path / "audio.mp4", tmp_path / "file.mp4"
    assert cli_exit_code(_argv(release, short_wav, audio_driven, "--seed", "5")) == 0
    assert cli_exit_code(_argv(release, short_wav, from_file, "--seed", "5", "--pose-video", str(tmp_path / "marks.npy"))) == 0
    assert probe(from_file)["n_frames"] == 23
    # the landmark-driven release files (face_locator_pose.pth, unclamped noise) give another video
    assert not np.array_equal(_frames(from_file), _frames(audio_driven))

    driving = tmp_path / "driving.mp4"
    assert cli_exit_code(["animate", "--image", str(portrait_path("astronaut")), "--audio", str(short_wav), "--size", "128",
                 "-o", str(driving), "--quiet"]) == 0
    from_video = tmp_path / "video.mp4"
    assert cli_exit_code(_argv(release, short_wav, from_video, "--seed", "5", "--pose-video", str(driving))) == 0
    assert probe(from_video)["n_frames"] == 23


def test_bad_pose_input_is_one_clear_error_and_no_file(release, short_wav, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4), np.float32))
    out = tmp_path / "out.mp4"
    assert cli_exit_code(_argv(release, short_wav, out, "--pose-video", str(bad))) == 2
    assert "(frames, points, 2 or 3)" in capsys.readouterr().err
    assert cli_exit_code(_argv(release, short_wav, out, "--pose-video", str(tmp_path / "nope.mp4"))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_missing_release_files_are_named_together(release, short_wav, tmp_path, capsys):
    partial = tmp_path / "pretrained_weights"
    shutil.copytree(release, partial)
    (partial / "audio_processor" / "whisper_tiny.pt").unlink()
    (partial / "reference_unet.pth").unlink()
    out = tmp_path / "out.mp4"
    assert cli_exit_code(_argv(tmp_path, short_wav, out)) != 0
    err = capsys.readouterr().err
    assert "whisper_tiny.pt" in err and "reference_unet.pth" in err
    assert not out.exists()


def test_controls_echomimic_cannot_honour_are_refused(release, short_wav, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert cli_exit_code(_argv(release, short_wav, out, "--lip-weight", "2")) == 2
    assert "--lip-weight is not honoured by the echomimic engine" in capsys.readouterr().err
    assert cli_exit_code(_argv(release, short_wav, out, "--size", "100")) == 2
    assert "multiple of 64" in capsys.readouterr().err
    assert not out.exists()
