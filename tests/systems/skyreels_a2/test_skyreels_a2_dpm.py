"""`--scheduler dpm` for SkyReels-A2: DPM-Solver++ (2M) for flow matching at the release's shift. Its own flow
schedule gives the release's sigmas and timesteps; the real CLI renders the tiny release with it (an mp4 with the
speech's audio); the same seed gives the same frames, which differ from the release UniPC's by a measured
amount; a scheduler that is not a choice is refused naming the option."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.io import probe
from tests.support import cli_exit_code

# uint8 frames of the tiny release (random weights, 3 steps): DPM-Solver++ against UniPC measured 6 grey levels
# max (mean 0.53) on this test's inputs; the bound leaves room for other BLAS builds
FRAME_BOUND = 16


@pytest.mark.parametrize("steps", [1, 3, 50])
def test_dpm_flow_schedule_is_the_release_one(skyreels_a2_release, steps):
    from talkinghead.systems.skyreels_a2.pipeline import release_sampler
    from talkinghead.systems.skyreels_a2.release import SkyReelsA2Release

    class Release:  # release_sampler reads only the scheduler the release installs
        scheduler = staticmethod(SkyReelsA2Release.scheduler)

    dpm, unipc = release_sampler(Release, "dpm", steps), release_sampler(Release, "unipc", steps)
    assert type(dpm).__name__ == "DPMSolverMultistepScheduler" and dpm.config.flow_shift == unipc.config.flow_shift
    torch.testing.assert_close(dpm.sigmas, unipc.sigmas, rtol=0, atol=1e-6)
    assert dpm.timesteps.tolist() == unipc.timesteps.tolist()


def _argv(release, wav, out, refs, *extra):
    from talkinghead.assets import portrait_path

    argv = ["animate", "--engine", "skyreels-a2", "--checkpoint-dir", str(release), "--image",
            str(portrait_path("astronaut")), "--audio", str(wav), "--size", "80", "-o", str(out), "--quiet", *extra]
    for ref in refs:
        argv += ["--reference", str(ref)]
    return argv


def _render(release, refs, wav, scheduler):
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig, MotionConfig, RenderConfig
    from talkinghead.io import load_audio
    from talkinghead.io.image import as_portrait
    from talkinghead.systems.skyreels_a2.engine import SkyReelsA2Animator

    config = AnimateConfig(motion=MotionConfig(seed=5), render=RenderConfig(size=80), diffusion=DiffusionConfig(
        checkpoint_dir=str(release), steps=3, scheduler=scheduler, reference=tuple(str(p) for p in refs)))
    animator = SkyReelsA2Animator(as_portrait(str(portrait_path("astronaut"))), config)
    return np.stack(list(animator.frames(load_audio(wav))))


def test_cli_renders_the_release_with_dpm_solver(skyreels_a2_release, reference_images, short_wav, tmp_path):
    out = tmp_path / "dpm.mp4"
    assert cli_exit_code(_argv(skyreels_a2_release, short_wav, out, reference_images, "--steps", "3", "--seed", "5",
                               "--scheduler", "dpm")) == 0
    info = probe(out)
    assert (info["width"], info["height"]) == (80, 48)
    assert info["n_frames"] == 22 and info["audio_duration"] == pytest.approx(0.9, abs=0.05)


def test_same_seed_same_frames_near_the_release_sampler(skyreels_a2_release, reference_images, short_wav):
    """At 3 steps: at 1 or 2 both solvers give the same result (a first-order step, then the last step returns the
    x0 prediction, which UniPC's correction of the sample does not reach)."""
    dpm = _render(skyreels_a2_release, reference_images, short_wav, "dpm")
    np.testing.assert_array_equal(dpm, _render(skyreels_a2_release, reference_images, short_wav, "dpm"))
    official = _render(skyreels_a2_release, reference_images, short_wav, "official")
    assert dpm.shape == official.shape == (22, 48, 80, 3)
    diff = np.abs(dpm.astype(int) - official.astype(int))
    print(f"skyreels-a2 dpm vs unipc: max {diff.max()}, mean {diff.mean():.3f} grey levels")
    assert 0 < diff.max() <= FRAME_BOUND


def test_a_scheduler_that_is_no_choice_is_refused(skyreels_a2_release, reference_images, short_wav, tmp_path,
                                                  capsys):
    out = tmp_path / "x.mp4"
    assert cli_exit_code(_argv(skyreels_a2_release, short_wav, out, reference_images, "--scheduler", "unipc")) == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and "dpm" in err and not out.exists()
