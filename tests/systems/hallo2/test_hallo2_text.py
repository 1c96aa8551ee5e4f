"""Hallo2's text variant: a text AdaLN in every audio-attention block of the denoising UNet, fed the pooled T5
embedding of a prompt. A fresh variant computes exactly what the net without text layers computes; once the AdaLN
weights are non-zero the prompt steers the output. A trained tiny variant renders through the real CLI with
--prompt; a checkpoint without text layers (the release, or a run trained without a text encoder) refuses one."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead.io import probe
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.systems.hallo.model import HalloNet
from talkinghead.systems.hallo.train import HalloTrainNet
from talkinghead.systems.hallo2.text import PromptEncoder, write_tiny_t5
from talkinghead.systems.unet_adapter import TINY_MODEL, TINY_UNET
from tests.support import CONFIGS, cli_exit_code

FRAMES, SIDE = 2, 8  # latent clip of the tiny net


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> PromptEncoder:
    return PromptEncoder(write_tiny_t5(tmp_path_factory.mktemp("t5")))


def tiny_nets(text_dim: int) -> tuple[HalloNet, HalloNet]:
    """(the tiny Hallo2 net, its text variant with the same weights for every key they share)."""
    unet = {**SD15_UNET, **TINY_UNET, "sample_size": SIDE}
    torch.manual_seed(0)
    config = HalloTrainNet.for_system(unet, 2, TINY_MODEL["hallo2"]).config
    base = HalloNet(config).eval()
    with torch.no_grad():  # Hallo's zero-initialised output convs made non-zero, so audio reaches the frames
        for name, p in base.named_parameters():
            if "zero_conv" in name or "proj_out" in name:
                p.normal_(0, 0.2)
    text = HalloNet(replace(config, text_dim=text_dim)).eval()
    missing, unexpected = text.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(".text_adaln." in k for k in missing)
    assert not any("text_adaln" in k for k in base.state_dict())  # the released layout: no text keys
    return base, text


def denoise_once(net: HalloNet, text: torch.Tensor | None) -> torch.Tensor:
    """One denoising-UNet call on fixed inputs: (1, 4, FRAMES, SIDE, SIDE)."""
    g = torch.Generator().manual_seed(1)
    d = net.config.unet["cross_attention_dim"]
    masks = {b: [torch.rand(FRAMES, (SIDE // 2 ** i) ** 2, generator=g) for i in range(4)]
             for b in ("full", "face", "lip")}
    with torch.no_grad():
        return net.denoising_unet(torch.randn(1, 4, FRAMES, SIDE, SIDE, generator=g), torch.tensor([500]),
                                  torch.randn(1, 2, d, generator=g), torch.randn(1, FRAMES, 4, d, generator=g),
                                  None, masks, (1.0, 1.0, 1.0), None, text_embedding=text)


def test_a_fresh_text_variant_equals_the_net_and_a_trained_one_follows_the_prompt(prompts):
    base, variant = tiny_nets(prompts.dim)
    smiling, angry = prompts.embed("a smiling person"), prompts.embed("an angry person")
    assert smiling.shape == (1, prompts.dim) and not torch.equal(smiling, angry)
    plain = denoise_once(base, None)
    assert torch.equal(denoise_once(variant, smiling), plain)  # adaLN-Zero: the identity until trained

    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in variant.named_parameters():
            if ".text_adaln." in name:
                p.normal_(0, 0.1, generator=g)
    a, b = denoise_once(variant, smiling), denoise_once(variant, angry)
    assert (a - plain).abs().max() > 1e-3
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(denoise_once(variant, smiling), a)


# ------------------------------------------------------------------ through the CLI


def smoke_run(config: str, folder: Path) -> Path:
    """`talkinghead train --config configs/train/CONFIG --smoke` into `folder`: the run folder."""
    from talkinghead.train.smoke import smoke_train
    from talkinghead.train.trainer import TrainConfig

    return smoke_train(TrainConfig.from_yaml(CONFIGS / config), folder).out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A smoke-trained text variant whose text AdaLN weights (net and EMA) are then set to non-zero values, as a
    longer run leaves them (two smoke steps barely move them from zero)."""
    run = smoke_run("hallo2_text.yaml", tmp_path_factory.mktemp("hallo2_text"))
    g = torch.Generator().manual_seed(3)
    for weights in sorted(run.glob("checkpoints/step-*/model*/diffusion_pytorch_model.safetensors")):
        state = load_file(weights)
        for key in sorted(state):
            if ".text_adaln." in key:
                state[key] = torch.randn(state[key].shape, generator=g) * 0.5
        save_file(state, str(weights))
    return run


def _argv(checkpoint: Path, wav: Path, out: Path, *extra: str) -> list[str]:
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", "hallo2", "--checkpoint-dir", str(checkpoint), "--image",
            str(portrait_path("astronaut")), "--audio", str(wav), "--size", "128", "--steps", "2", "-o", str(out),
            "--quiet", *extra]


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_a_trained_text_variant_renders_the_prompt_through_the_cli(text_run, short_wav, tmp_path):
    a, again, other = tmp_path / "a.mp4", tmp_path / "again.mp4", tmp_path / "other.mp4"
    for out, prompt in ((a, "a smiling person"), (again, "a smiling person"), (other, "an angry person")):
        assert cli_exit_code(_argv(text_run, short_wav, out, "--seed", "3", "--prompt", prompt)) == 0
    info = probe(a)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["n_frames"] == 23  # 0.9 s at 25 fps
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert np.array_equal(_frames(a), _frames(again))
    assert not np.array_equal(_frames(a), _frames(other))
    # guidance against the clip without its audio and with the empty prompt (the default, 1, renders unguided)
    guided = tmp_path / "guided.mp4"
    assert cli_exit_code(_argv(text_run, short_wav, guided, "--seed", "3", "--prompt", "a smiling person",
                               "--guidance-scale", "3")) == 0
    assert probe(guided)["n_frames"] == 23 and not np.array_equal(_frames(guided), _frames(a))


def _refused(argv: list[str], out: Path, capsys) -> str:
    assert cli_exit_code(argv) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_a_checkpoint_without_text_layers_refuses_a_prompt(hallo_release, face_embedding_file, short_wav, tmp_path,
                                                          capsys):
    out = tmp_path / "release.mp4"
    err = _refused(_argv(hallo_release, short_wav, out, "--face-embedding", str(face_embedding_file), "--prompt",
                         "a smiling person"), out, capsys)
    assert "--prompt" in err and "no text layers" in err and "hallo2_text.yaml" in err

    run = smoke_run("hallo2_stage2.yaml", tmp_path / "stage2")  # a Hallo2 run trained without a text encoder
    out = tmp_path / "run.mp4"
    err = _refused(_argv(run, short_wav, out, "--prompt", "a smiling person"), out, capsys)
    assert "--prompt" in err and "no text layers" in err
