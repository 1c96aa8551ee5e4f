"""`talkinghead verify NAME DIR` for every system the registry gives a verifier, through the real CLI: it passes on
the shared reference data with one line per compared output, fails when one weight of the release folder is
changed (while the outputs that weight does not reach still pass), and refuses a folder that is not reference data.
What one system checks beyond this (variant fixtures, missing files, key maps) stays in its own test file."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

import pytest
import torch

from talkinghead.systems import SYSTEMS, verifier_names
from tests.support import cli_exit_code, fixture

LINE = re.compile(r"^(ok  |FAIL) (.+?) +max\|diff\| \S+  \(tolerance \S+\)$")


@dataclass(frozen=True)
class Case:
    """What a system's verification must show on the shipped data, and the one-weight change that must fail it."""

    compared: tuple[str, ...]  # outputs among the compared ones (substrings of the check names)
    at_least: int  # how many outputs are compared, at the least
    release: str  # the release folder (below the system's fixture) that is copied and changed
    weights: str  # the weight file in it
    key: str  # the tensor changed: w + scale * N(0, 1) (a constant shift can vanish in the next normalisation)
    scale: float
    fails: tuple[str, ...]  # outputs that weight reaches
    unaffected: tuple[str, ...]  # outputs it does not reach: they still pass


CASES = {
    "hallo": Case(
        ("a.model_out_cfg_batch", "b.videos", "b.final_latents", "a.ref_bank.mid_block", "out.audio_windows",
         "clip0_audioproj_tokens_tiny_net"), 40,
        "hallo_tiny", "net.pth", "denoising_unet.up_blocks.1.audio_modules.0.transformer_blocks.0.attn2_2.to_v.weight",
        0.05, ("a.model_out_cfg_batch",), ("imageproj", "face_locator")),
    "hallo2": Case(
        ("tr.top_idx", "out.x.crop_center", "hallo2_net_g.tsv", "hallo2_net.tsv", "long.clip0.keep_mask_u8"), 60,
        "hallo2_sr_tiny", "net_g.pth", "generator.blocks.24.bias",  # the last conv's bias
        0.01, ("out.x.mean_hw",), ("tr.top_idx",)),  # the transformer is untouched: the codes still agree
    "echomimic": Case(
        ("audio.log_mel", "audio.whisper_feature", "audio.chunk_feature_indices", "a.ref_bank.mid_block",
         "a.unet_block_out.up_blocks.0", "a.model_out_cfg_batch", "b.unet_out.0.1", "b.step_guided_out.2", "b.videos",
         "c.context_idx.2.1", "c.final_latents"), 60,
        "echomimic_tiny", "motion_module.pth", "down_blocks.0.motion_modules.0.temporal_transformer.proj_out.weight",
        0.05, ("a.model_out_cfg_batch", "c.final_latents"), ("audio.", "face_locator", "ref_bank")),
    "hallo3": Case(
        ("ref.bank.layer1", "step0.layer0.face_attn_out", "step0.layer1.audio_attn_out", "step0.audio_proj_out",
         "s.noise_draw2", "s.step1.x_out", "s.samples"), 49,
        "hallo3_tiny", "1/mp_rank_00_model_states.pt", "model.diffusion_model.transformer.layers.1.audio_attn.dense.weight",
        0.05, ("step0.layer1.audio_attn_out", "s.samples"), ("ref.", "audio_proj_out", "face_proj_out", "layer0.")),
    "hallo4": Case(
        ("w.audio_windows", "p.ref_image", "b.vace_context", "a.cond.blocks.0.condition_cross_attn.out",
         "c.step.2.latents_after", "c.motion_frame_masked", "out.frames_uint8"), 112,
        "hallo4_tiny", "hallo4/model_weight.ckpt", "blocks.3.audio_cross_attn.o.weight",
        0.5, ("a.cond.blocks.3.out", "b.step.0.noise_pred_cond"),
        ("a.cond.blocks.2.out", "w.audio_windows", "p.ref_image", "b.vace_context", "b.skeleton_latents")),
    "skyreels-a1": Case(
        ("a.patch_embed_out", "a.block.1.hidden_out", "a.control_latents", "c.frames_uint8", "b.step.2.guided",
         "b.frames_uint8", "b.vae_sample_noise", "sched.alphas_cumprod"), 50,
        "skyreels_a1_tiny", "pose_guider/diffusion_pytorch_model.safetensors", "encoder.conv_out.conv.weight",
        0.01, ("a.control_latents",), ("ref_vae_moments", "(on stored inputs)")),  # the reference VAE, the DiT alone
    "skyreels-a2": Case(
        ("sched.timesteps", "cond.posterior_noise", "clip.hidden_states_penultimate_2", "c.s0.cond.block.1_out",
         "c.step.2.corrected_sample", "c.frames_uint8", "b.step.2.x0_pred", "b.frames_uint8",
         "text.negative_prompt_input_ids", "(on stored inputs)"), 90,
        "skyreels_a2_tiny", "transformer/diffusion_pytorch_model.safetensors",
        "blocks.1.attn2.add_v_proj.weight",  # the image (semantic reference) branch of the last block
        0.05, ("c.step.0.transformer_out_cond",), ("clip.", "prompt_embeds", "cond.condition", "cond.vae_moments",
                                                   "block.0_out")),
}


def _case(name: str) -> Case:
    assert name in CASES, f"add a row for {name} to CASES (its compared outputs and a weight change that must fail)"
    return CASES[name]


def _verdicts(out: str) -> dict[str, bool]:
    """check name -> passed, from the CLI's lines; every line but the total is one compared output."""
    lines = out.strip().splitlines()
    parsed = [LINE.match(line) for line in lines[:-1]]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m]
    verdicts = {m.group(2): m.group(1) == "ok  " for m in parsed}
    assert len(verdicts) == len(parsed)  # no output compared twice
    assert lines[-1] == f"{sum(verdicts.values())}/{len(verdicts)} outputs within tolerance"
    return verdicts


def _perturb(folder, case: Case) -> None:
    """Change one tensor of a .safetensors or torch-pickled weight file (the tensor may sit one level down, as
    in {"module": ...} or {"params_ema": ...})."""
    path = folder / case.weights
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
        holder = state
    else:
        state = torch.load(path, weights_only=True)
        holder = state if case.key in state else next(v for v in state.values() if isinstance(v, dict) and case.key in v)
    w = holder[case.key]
    holder[case.key] = w + case.scale * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)).to(w.dtype)
    path.unlink()  # the copy keeps the shared data's read-only mode
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("name", verifier_names())
def test_shipped_reference_data_passes_every_check(name, capsys):
    case = _case(name)
    assert cli_exit_code(["verify", name, str(fixture(SYSTEMS[name].fixture))]) == 0
    verdicts = _verdicts(capsys.readouterr().out)
    assert all(verdicts.values()) and len(verdicts) >= case.at_least, len(verdicts)
    for key in case.compared:
        assert any(key in n for n in verdicts), key


@pytest.mark.parametrize("name", verifier_names())
def test_one_changed_weight_fails_where_it_reaches(name, tmp_path, capsys):
    case = _case(name)
    folder = tmp_path / case.release
    shutil.copytree(fixture(SYSTEMS[name].fixture, case.release), folder)
    _perturb(folder, case)
    assert cli_exit_code(["verify", name, str(folder)]) == 1
    verdicts = _verdicts(capsys.readouterr().out)
    failed = [n for n, ok in verdicts.items() if not ok]
    for key in case.fails:
        assert any(key in n for n in failed), (key, failed)
    for key in case.unaffected:
        assert not any(key in n for n in failed), (key, failed)
        assert any(key in n for n, ok in verdicts.items() if ok), key


@pytest.mark.parametrize("name", verifier_names())
def test_a_folder_without_reference_data_is_a_clear_error(name, tmp_path, capsys):
    assert cli_exit_code(["verify", name, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"holds no {SYSTEMS[name].title} reference data" in err and "how to fix" in err
