"""`--engine skyreels-a1` end to end on a tiny release folder laid out like the official one (transformer, VAE
and pose guider from the shared reference data), through the real CLI, MediaPipe and PyAV: driven by speech
through our motion track, or by a driving video's landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.io import probe
from tests.support import cli_exit_code


def _frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _argv(release, wav, out, *extra):
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", "skyreels-a1", "--checkpoint-dir", str(release), "--image",
            str(portrait_path("astronaut")), "--audio", str(wav), "--steps", "2", "-o", str(out), "--quiet", *extra]


def test_speech_driven_video_has_the_audio_length_and_repeats_for_a_seed(skyreels_a1_release, short_wav, tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, a, "--seed", "3")) == 0
    info = probe(a)
    assert (info["width"], info["height"]) == (48, 32)  # the tiny transformer's sample size x 8: its only size
    assert info["n_frames"] == 22  # round(0.9 s x 25 fps): two clips of 15 new frames, the second cut
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, b, "--seed", "3")) == 0
    np.testing.assert_array_equal(_frames(a), _frames(b))
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, c, "--seed", "4")) == 0
    assert not np.array_equal(_frames(a), _frames(c))


def test_landmark_file_drives_it_and_bad_inputs_are_one_message(skyreels_a1_release, short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait
    from talkinghead.face.landmarks import analyze
    from talkinghead.types import Portrait

    face = analyze(Portrait(portrait("astronaut")))
    track = np.repeat(face.landmarks[None], 30, 0)
    track[:, :, 1] += np.linspace(0, 20, 30)[:, None]  # the head moves down
    path = tmp_path / "pose.npy"
    np.save(path, track)
    out = tmp_path / "pose.mp4"
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, out, "--pose-video", str(path))) == 0
    assert probe(out)["n_frames"] == 22
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5, 2)))
    out = tmp_path / "bad.mp4"
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, out, "--pose-video", str(bad))) == 2
    assert "(frames, 478, 2 or 3)" in capsys.readouterr().err and not out.exists()
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, out, "--size", "256")) == 2  # the release has one size
    assert "--size" in capsys.readouterr().err and not out.exists()


def test_a_release_without_siglip_names_the_missing_files(skyreels_a1_release, short_wav, tmp_path, capsys):
    import shutil

    broken = tmp_path / "SkyReels-A1-5B"
    shutil.copytree(skyreels_a1_release / "pretrained_models" / "SkyReels-A1-5B", broken)
    shutil.rmtree(broken / "siglip-so400m-patch14-384")
    out = tmp_path / "x.mp4"
    assert cli_exit_code(_argv(broken, short_wav, out)) != 0
    err = capsys.readouterr().err
    assert "siglip-so400m-patch14-384/model.safetensors" in err and not out.exists()


def test_a_driving_video_moves_the_landmarks(skyreels_a1_release, short_wav, tmp_path):
    """A driving video whose face moves down: its FaceMesh landmarks (real MediaPipe) move the portrait's
    landmarks by the same displacement, scaled by the face sizes, in every control clip."""
    import cv2

    from talkinghead.assets import portrait
    from talkinghead.config import AnimateConfig, DiffusionConfig
    from talkinghead.io.image import as_portrait
    from talkinghead.io.video import encode_frames
    from talkinghead.systems.skyreels_a1.engine import SkyReelsA1Animator

    face = cv2.resize(portrait("grace_hopper"), (256, 300))
    frames = [np.roll(face, 2 * k, axis=0) for k in range(12)]
    video = encode_frames(frames, tmp_path / "driving.mp4", 25.0)
    config = AnimateConfig(diffusion=DiffusionConfig(checkpoint_dir=str(skyreels_a1_release), steps=1,
                                                     pose_video=str(video)))
    animator = SkyReelsA1Animator(as_portrait(portrait("astronaut")), config)
    points = animator._pose_landmarks(12)
    shift = (points[:, :, :2] - animator.ref_points[None, :, :2]).mean(axis=1)  # (frames, 2)
    assert np.allclose(shift[0], 0)
    assert (np.diff(shift[:, 1]) > 0).mean() > 0.8 and np.abs(shift[:, 0]).max() < 0.5 * shift[-1, 1]
    out = tmp_path / "driven.mp4"
    assert cli_exit_code(_argv(skyreels_a1_release, short_wav, out, "--pose-video", str(video))) == 0
    assert probe(out)["n_frames"] == 22  # the video is shorter than the speech: its last pose is held
