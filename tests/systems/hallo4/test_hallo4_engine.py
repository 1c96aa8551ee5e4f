"""`animate --engine hallo4` on a tiny release in the official layout, driven by speech and a skeleton video: the
real CLI writes an mp4 with audio as long as the speech, cropped back to the portrait's aspect; the engine's frames
are the same for the same seed; the skeleton video is required and named when missing."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.io import probe
from tests.support import CONFIGS, cli_exit_code


def _cli_frames(checkpoint, skeleton_video, short_wav, out, *more) -> np.ndarray:
    """`talkinghead animate --engine hallo4` on the astronaut and the 0.9 s speech: exit 0, an mp4 whose video
    lasts as long as its audio (within a frame); its decoded frames."""
    import av

    from talkinghead.assets import portrait_path

    assert cli_exit_code(["animate", "--engine", "hallo4", "--checkpoint-dir", str(checkpoint), "--pose-video",
                          str(skeleton_video), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                          *more, "-o", str(out), "--quiet"]) == 0
    info = probe(out)
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert abs(info["n_frames"] / info["fps"] - info["audio_duration"]) <= 1.0 / info["fps"] + 1e-6
    with av.open(str(out)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_cli_renders_the_release(hallo4_release, skeleton_video, short_wav, tmp_path):
    frames = _cli_frames(hallo4_release, skeleton_video, short_wav, tmp_path / "h4.mp4", "--seed", "3")
    assert frames.shape[1:3] == (32, 32)  # 48 wide clips cropped back to the square portrait's aspect
    assert frames.std() > 1.0


def test_same_seed_same_frames(hallo4_release, skeleton_video, short_wav):
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig, MotionConfig
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.hallo4.engine import Hallo4Animator

    portrait, speech = load_image(portrait_path("astronaut")), load_audio(short_wav)

    def render(seed):
        config = AnimateConfig(motion=MotionConfig(seed=seed), diffusion=DiffusionConfig(
            checkpoint_dir=str(hallo4_release), pose_video=str(skeleton_video)))
        animator = Hallo4Animator(portrait, config, warn=False)
        frames = np.stack(list(animator.frames(speech)))
        assert len(frames) == animator.n_frames(speech)
        return frames

    a = render(5)
    np.testing.assert_array_equal(a, render(5))
    assert not np.array_equal(a, render(6))


def test_the_skeleton_video_is_required(hallo4_release, short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    out = tmp_path / "x.mp4"
    assert cli_exit_code(["animate", "--engine", "hallo4", "--checkpoint-dir", str(hallo4_release), "--image",
                          str(portrait_path("astronaut")), "--audio", str(short_wav), "-o", str(out), "--quiet"]) == 2
    assert "--pose-video" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------ a Hallo4 trained by `talkinghead train`


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A Hallo4 SFT run of `talkinghead train --smoke`: the tiny Hallo4WanModel at 32 px, 5-frame clips."""
    from talkinghead.train.smoke import smoke_train
    from talkinghead.train.trainer import TrainConfig

    config = CONFIGS / "hallo4_sft.yaml"
    return smoke_train(TrainConfig.from_yaml(config), tmp_path_factory.mktemp("hallo4_sft")).out


def test_cli_renders_a_trained_run(trained_run, skeleton_video, short_wav, tmp_path):
    frames = _cli_frames(trained_run, skeleton_video, short_wav, tmp_path / "trained.mp4", "--steps", "1")
    assert frames.shape[1:3] == (32, 32)  # the run's frame size
    assert frames.std() > 1.0


def test_a_trained_run_gives_the_same_frames_for_the_same_seed_and_refuses_a_prompt(trained_run, skeleton_video,
                                                                                   short_wav):
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig, MotionConfig
    from talkinghead.errors import InputError
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.hallo4.engine import hallo4_animator

    portrait, speech = load_image(portrait_path("astronaut")), load_audio(short_wav)

    def config(seed, **more):
        return AnimateConfig(motion=MotionConfig(seed=seed), diffusion=DiffusionConfig(
            checkpoint_dir=str(trained_run), pose_video=str(skeleton_video), steps=1, **more))

    def render(seed):
        animator = hallo4_animator(portrait, config(seed), warn=False)
        frames = np.stack(list(animator.frames(speech)))
        assert len(frames) == animator.n_frames(speech)
        return frames

    a = render(5)
    np.testing.assert_array_equal(a, render(5))
    assert not np.array_equal(a, render(6))
    # the EMA weights render, as for the other trained engines
    import torch
    from safetensors.torch import load_file

    step = sorted((trained_run / "checkpoints").glob("step-*"))[-1]
    name, first = next(hallo4_animator(portrait, config(5), warn=False).release.dit.named_parameters())
    assert torch.equal(first, load_file(step / "model_ema" / "diffusion_pytorch_model.safetensors")[name])
    assert not torch.equal(first, load_file(step / "model" / "diffusion_pytorch_model.safetensors")[name])
    with pytest.raises(InputError) as err:
        hallo4_animator(portrait, config(5, prompt="a person is singing"), warn=False)
    assert err.value.field == "prompt"


def test_a_run_trained_on_stored_wav2vec2_features_renders_with_the_same_features(trained_run, hallo4_release,
                                                                                    short_wav, tmp_path):
    """A run whose dataset stored wav2vec2 features of the projection's window shape hears speech through the same
    encoder (found by name in the run's release folder) and windows as training did; without it, a clear error."""
    import json
    import shutil

    import torch

    from talkinghead.errors import InputError
    from talkinghead.io.audio import load_audio
    from talkinghead.train.preprocess import AudioEncoder
    from talkinghead.systems.hallo4.engine import TrainedHallo4

    step = sorted((trained_run / "checkpoints").glob("step-*"))[-1]
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "index.json").write_text(json.dumps({"audio_feats": {
        "kind": "wav2vec2", "model": "wav2vec2-base-960h", "layers": 2, "dim": 16}}))  # the tiny release's wav2vec2

    def run_with(release) -> TrainedHallo4:
        folder = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(step, folder)
        config = json.loads((folder / "train_config.json").read_text())
        config["dataset"], config["audio_context"] = str(dataset), 2  # windows of 5 frames, the projection's
        config["system"]["options"]["release"] = str(release)
        (folder / "train_config.json").write_text(json.dumps(config))
        return TrainedHallo4(folder)

    speech = load_audio(short_wav)
    windows, n = run_with(hallo4_release).audio_windows(speech, 25)
    ctx = 2
    feats = torch.from_numpy(AudioEncoder(hallo4_release / "wav2vec" / "wav2vec2-base-960h")(
        speech.samples, n, 25).astype("float32"))
    padded = torch.cat([torch.zeros(ctx, 2, 16), feats, torch.zeros(ctx, 2, 16)])
    assert n == 23 and windows.shape == (n, 5, 2, 16)
    assert torch.equal(windows, torch.stack([padded[i:i + 2 * ctx + 1] for i in range(n)]))
    without = tmp_path / "release_without_wav2vec2"
    shutil.copytree(hallo4_release, without, ignore=shutil.ignore_patterns("wav2vec"))
    with pytest.raises(InputError) as err:
        run_with(without).audio_windows(speech, 25)
    assert err.value.field == "checkpoint_dir" and "wav2vec2-base-960h" in str(err.value)
