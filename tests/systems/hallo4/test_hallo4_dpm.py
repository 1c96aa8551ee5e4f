"""`--scheduler dpm` for Hallo4: DPM-Solver++ (2M) for flow matching on the official shifted sigmas. Its own flow
schedule equals the official one (sigmas and the truncated integer timesteps the DiT gets); the real CLI renders
the tiny release with it; the same seed gives the same frames, which differ from the official UniPC's by a
measured amount; a scheduler that is not a choice is refused naming the option."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.io import probe
from tests.support import cli_exit_code

# uint8 frames of the tiny release (random weights, 3 steps): DPM-Solver++ against UniPC measured 5 grey levels
# max (mean 0.34) on this test's inputs; the bound leaves room for other BLAS builds
FRAME_BOUND = 16


@pytest.mark.parametrize("steps, shift", [(1, 8.0), (3, 8.0), (25, 8.0), (40, 5.0), (7, 1.0)])
def test_dpm_flow_schedule_is_the_official_one(steps, shift):
    from talkinghead.systems.hallo4.pipeline import flow_dpm_scheduler, official_scheduler

    dpm, unipc = flow_dpm_scheduler(steps, shift), official_scheduler(steps, shift)
    torch.testing.assert_close(dpm.sigmas, unipc.sigmas, rtol=0, atol=1e-6)
    assert dpm.timesteps.tolist() == unipc.timesteps.tolist()


def _render(release, skeleton, wav, seed, scheduler):
    """Frames at 3 steps: at 1 or 2 both solvers give the same result (a first-order step, then the last step
    returns the x0 prediction, which UniPC's correction of the sample does not reach)."""
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig, MotionConfig
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.hallo4.engine import Hallo4Animator

    config = AnimateConfig(motion=MotionConfig(seed=seed), diffusion=DiffusionConfig(
        checkpoint_dir=str(release), pose_video=str(skeleton), scheduler=scheduler, steps=3))
    animator = Hallo4Animator(load_image(portrait_path("astronaut")), config, warn=False)
    return np.stack(list(animator.frames(load_audio(wav))))


def test_cli_renders_the_release_with_dpm_solver(hallo4_release, skeleton_video, short_wav, tmp_path):
    from talkinghead.assets import portrait_path

    out = tmp_path / "dpm.mp4"
    assert cli_exit_code(["animate", "--engine", "hallo4", "--checkpoint-dir", str(hallo4_release), "--pose-video",
                          str(skeleton_video), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                          "--seed", "3", "--scheduler", "dpm", "-o", str(out), "--quiet"]) == 0
    info = probe(out)
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert abs(info["n_frames"] / info["fps"] - info["audio_duration"]) <= 1.0 / info["fps"] + 1e-6
    assert (info["width"], info["height"]) == (32, 32)


def test_same_seed_same_frames_near_the_official_sampler(hallo4_release, skeleton_video, short_wav):
    dpm = _render(hallo4_release, skeleton_video, short_wav, 3, "dpm")
    np.testing.assert_array_equal(dpm, _render(hallo4_release, skeleton_video, short_wav, 3, "dpm"))
    official = _render(hallo4_release, skeleton_video, short_wav, 3, "official")
    assert dpm.shape == official.shape
    diff = np.abs(dpm.astype(int) - official.astype(int))
    print(f"hallo4 dpm vs unipc: max {diff.max()}, mean {diff.mean():.3f} grey levels")
    assert 0 < diff.max() <= FRAME_BOUND


def test_a_scheduler_that_is_no_choice_is_refused(hallo4_release, skeleton_video, short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    out = tmp_path / "x.mp4"
    assert cli_exit_code(["animate", "--engine", "hallo4", "--checkpoint-dir", str(hallo4_release), "--pose-video",
                          str(skeleton_video), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                          "--scheduler", "euler", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and "dpm" in err and not out.exists()
