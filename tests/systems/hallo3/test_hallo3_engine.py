"""`animate --engine hallo3` on a tiny release in the official SAT layout: the real CLI writes an mp4 with audio,
as long as the speech, at the release's frame size, the same frames for the same seed; missing release files
are named in one message."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from talkinghead.io import probe
from tests.support import cli_exit_code


def _frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_cli_renders_the_release_deterministically(hallo3_release, face_embedding_file, short_wav, tmp_path):
    from talkinghead.assets import portrait_path

    outs = []
    for k, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"h3_{k}.mp4"
        assert cli_exit_code(["animate", "--engine", "hallo3", "--checkpoint-dir", str(hallo3_release), "--face-embedding",
                     str(face_embedding_file), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                     "--steps", "2", "--seed", str(seed), "--prompt", "a person is talking", "-o", str(out),
                     "--quiet"]) == 0
        outs.append(out)
    info = probe(outs[0])
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert abs(info["n_frames"] / info["fps"] - info["audio_duration"]) <= 1.0 / info["fps"] + 1e-6
    a, b, c = (_frames(o) for o in outs)
    assert a.shape[1:3] == (32, 48)  # the release's latent size x 8 (its learned positions fix it)
    # through the render service equal frames do not always encode to equal H.264 bytes (an intermittent encoder
    # difference, not the engine's), so the files are compared loosely and the engine's own frames exactly (below)
    assert np.abs(a.astype(int) - b).mean() < 0.5 * np.abs(a.astype(int) - c).mean()
    assert a.std() > 1.0  # not a blank video


def test_same_seed_same_frames_other_seed_other_frames(hallo3_release, face_embedding_file, short_wav):
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig, MotionConfig
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.hallo3.engine import Hallo3Animator

    portrait, speech = load_image(portrait_path("astronaut")), load_audio(short_wav)

    def render(seed):
        config = AnimateConfig(motion=MotionConfig(seed=seed), diffusion=DiffusionConfig(
            checkpoint_dir=str(hallo3_release), face_embedding=str(face_embedding_file), steps=2))
        animator = Hallo3Animator(portrait, config, warn=False)
        frames = np.stack(list(animator.frames(speech)))
        assert len(frames) == animator.n_frames(speech)
        return frames

    a = render(5)
    np.testing.assert_array_equal(a, render(5))
    assert not np.array_equal(a, render(6))


def test_missing_release_files_are_named_together(hallo3_release, face_embedding_file, short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    broken = tmp_path / "pretrained_models"
    shutil.copytree(hallo3_release, broken)
    shutil.rmtree(broken / "t5-v1_1-xxl")
    (broken / "hallo3" / "1" / "mp_rank_00_model_states.pt").unlink()
    out = tmp_path / "x.mp4"
    assert cli_exit_code(["animate", "--engine", "hallo3", "--checkpoint-dir", str(broken), "--face-embedding",
                 str(face_embedding_file), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                 "-o", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "mp_rank_00_model_states.pt" in err and "t5-v1_1-xxl/config.json" in err
    assert not out.exists()
