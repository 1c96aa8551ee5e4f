"""The Hallo and EchoMimic training systems: tiny nets build in the trainer, the shipped two-stage patterns
freeze what they say, a few fixed-noise steps on one batch lower the loss, and sampling is deterministic."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from talkinghead.errors import InputError
from talkinghead.systems.unet_adapter import System, SystemConfig
from talkinghead.train.trainer import TrainConfig, Trainer, step_generator
from tests.support import CONFIGS

TINY_UNET = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 16}
# the non-UNet parts at tiny sizes (the shipped YAMLs keep the official ones)
TINY_MODEL = {
    "hallo": {"face_locator": {"block_out_channels": [4, 8]},
              "image_proj": {"clip_extra_context_tokens": 2},
              "audio_proj": {"seq_len": 3, "blocks": 2, "channels": 8, "intermediate_dim": 16, "context_tokens": 4}},
    "echomimic": {"face_locator": {"block_out_channels": [4, 8]}, "audio_dim": 12},
}
SYSTEMS = tuple(TINY_MODEL)


def _config(name: str, dataset_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(dataset_dir), output_dir=str(out),
                system={"name": name, "crop": "face", "crop_size": 16, "motion_heads": 2, "unet": TINY_UNET,
                        "model": TINY_MODEL[name]},
                clip_frames=2, motion_frames=1, audio_context=1, batch_size=2, learning_rate=2e-3, max_steps=4,
                ema_decay=None, log_every=1, sample_every=1000, sample_steps=2, checkpoint_every=1000,
                progress=False, dropout={"audio": 0.0, "reference": 0.0, "motion": 0.0, "all_": 0.0})
    base.update(kw)
    return TrainConfig.from_dict(base)


def _stage_patterns(system: str, stage: int) -> dict:
    raw = yaml.safe_load((CONFIGS / f"{system}_stage{stage}.yaml").read_text(encoding="utf-8"))
    assert raw["system"]["name"] == system and str(raw["stage"]) == str(stage)
    return {"train": raw["train"], "freeze": raw.get("freeze", [])}


@pytest.mark.parametrize("system", SYSTEMS)
def test_official_stages_train_what_they_say(system: str, dataset_dir: Path, tmp_path: Path):
    """Stage 1 trains the image parts (reference net, spatial UNet, face locator), stage 2 the motion and
    audio parts; each is a non-empty proper subset, frozen weights stay put and trained ones move."""
    selected = {}
    for stage in (1, 2):
        t = Trainer(_config(system, dataset_dir, tmp_path / f"s{stage}", gradient_checkpointing=True,
                            **_stage_patterns(system, stage)))
        names = dict(t.system.net.named_parameters())
        assert 0 < len(t.trainable) < len(names)
        selected[stage] = set(t.trainable)
        before = {n: p.detach().clone() for n, p in names.items()}
        t.train_step()
        frozen = [n for n in names if n not in selected[stage]]
        assert all(torch.equal(before[n], names[n]) for n in frozen)
        assert any(not torch.equal(before[n], names[n]) for n in t.trainable)
    s1, s2 = selected[1], selected[2]
    assert not s1 & s2  # the two stages train disjoint parts
    assert any(n.startswith("reference_unet.") for n in s1) and any(n.startswith("face_locator.") for n in s1)
    assert not any("motion_modules" in n for n in s1) and not any(n.startswith("reference_unet.") for n in s2)
    assert any("motion_modules" in n for n in s2) and any(n.startswith("mel_proj.") for n in s2)
    if system == "hallo":
        assert any(n.startswith("imageproj.") for n in s1) and any("audio_modules" in n for n in s2)
        assert any(n.startswith("audioproj.") for n in s2)
    else:
        assert any(".attn2." in n for n in s2) and not any(".attn2." in n for n in s1)


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_few_fixed_noise_steps_lower_the_loss(system: str, dataset_dir: Path, tmp_path: Path):
    cfg = _config(system, dataset_dir, tmp_path, fixed_noise=True, overfit_batches=1, learning_rate=3e-3)
    cfg.system.min_snr_gamma = None
    t = Trainer(cfg)
    losses = [t.train_step()["loss"] for _ in range(8)]
    assert min(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize("system", SYSTEMS)
def test_sample_is_bounded_and_deterministic(system: str, dataset_dir: Path, tmp_path: Path):
    t = Trainer(_config(system, dataset_dir, tmp_path))
    batch = t.batch([0, 1])
    sys = t.system
    a = sys.sample(batch, torch.Generator().manual_seed(3), steps=2)
    b = sys.sample(batch, torch.Generator().manual_seed(3), steps=2)
    c = sys.sample(batch, torch.Generator().manual_seed(4), steps=2)
    assert a.shape == (2, 2, 3, 16, 16)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hallo_conditions_follow_the_crop_and_levels(dataset_dir: Path, tmp_path: Path):
    """Face locator input at its size, masks per level at latent /1../8, zero face embedding, and audio
    windows shaped for the audio projection (projected mel here: the test dataset has no wav2vec2)."""
    t = Trainer(_config("hallo", dataset_dir, tmp_path))
    batch = t.batch([0, 1])
    mb = t.system.model_batch(batch)
    assert mb["location"].shape == (2, 3, 2, 32, 32)  # 2 locator stages: twice the 16 px latent
    assert set(mb["masks"]) == {"lip", "face", "full"}
    assert [m.shape for m in mb["masks"]["lip"]] == [(4, 256), (4, 64), (4, 16), (4, 4)]
    total = sum(mb["masks"][k][0] for k in mb["masks"])
    assert total.min() > 0.5 and total.max() < 1.5  # the three soft masks roughly partition the frame
    assert torch.count_nonzero(mb["face_embedding"]) == 0
    assert mb["audio_windows"].shape == (2, 2, 3, 2, 8)
    assert mb["ref"].shape[1] == 2  # portrait + one motion frame


def test_echomimic_landmark_images_mark_the_points(dataset_dir: Path, tmp_path: Path):
    t = Trainer(_config("echomimic", dataset_dir, tmp_path))
    batch = t.batch([0, 1])
    mb = t.system.model_batch(batch)
    loc = mb["location"]
    assert loc.shape == (2, 1, 2, 32, 32) and set(loc.unique().tolist()) == {0.0, 1.0}
    assert 0.02 < loc.mean() < 0.6  # dots on the face, not an empty or full image
    assert mb["ref"].shape[1] == 1 and mb["audio_tokens"].shape[-1] == 12
    # per-frame audio: changing frame 1's audio changes the output of frame 1
    net = t.system.net
    noisy = torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.denoising_unet.parameters():  # wake the zero-initialised output layers
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        out = net.predict(noisy, torch.tensor([500, 500]), mb)
        mb2 = {**mb, "audio_tokens": mb["audio_tokens"].clone()}
        mb2["audio_tokens"][:, 1] += 1.0
        out2 = net.predict(noisy, torch.tensor([500, 500]), mb2)
    assert out.shape == noisy.shape
    assert not torch.allclose(out[:, :, 1], out2[:, :, 1])


def test_the_first_loss_is_reproducible(dataset_dir: Path, tmp_path: Path):
    """Two trainers of the same config give the same first loss (explicit seeds, no global state)."""
    a = Trainer(_config("hallo", dataset_dir, tmp_path / "a"))
    b = Trainer(_config("hallo", dataset_dir, tmp_path / "b"))
    batch = a.batch([0, 1])
    la = a.system.loss(batch, step_generator(a.config, 0, 0))[0]
    lb = b.system.loss(batch, step_generator(b.config, 0, 0))[0]
    assert torch.equal(la, lb)


def test_pretrained_audio_features_are_used_when_the_dataset_has_them(dataset_dir: Path, tmp_path: Path):
    """wav2vec2 windows go straight to Hallo's audio projection and whisper windows become EchoMimic's
    per-frame tokens; features of the wrong shape are a clear error, not a silent mel fallback."""
    hallo = Trainer(_config("hallo", dataset_dir, tmp_path / "h"))
    batch = hallo.batch([0, 1])
    feats = torch.randn(2, 2, 3, 2, 8, generator=torch.Generator().manual_seed(0))  # (b, f, w, layers, d)
    assert torch.equal(hallo.system.net.audio_windows({**batch, "audio_feats": feats}), feats)
    with pytest.raises(InputError, match="audio projection"):
        hallo.system.net.audio_windows({**batch, "audio_feats": feats[:, :, :2]})
    echo = Trainer(_config("echomimic", dataset_dir, tmp_path / "e"))
    whisper = torch.randn(2, 2, 3, 5, 12, generator=torch.Generator().manual_seed(1))
    tokens = echo.system.net.audio_tokens({**batch, "audio_feats": whisper})
    assert tokens.shape == (2, 2, 15, 12) and torch.equal(tokens[:, :, :5], whisper[:, :, 0])
    with pytest.raises(InputError, match="whisper"):
        echo.system.net.audio_tokens({**batch, "audio_feats": whisper[..., :8]})


def test_unknown_system_names_the_choices():
    with pytest.raises(InputError, match="hallo"):
        System(SystemConfig(name="halo", unet=TINY_UNET))
    with pytest.raises(InputError, match="system.model"):
        System(SystemConfig(name="emo", unet=TINY_UNET, model={"audio_dim": 12}))


def _woken(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights in the zero-initialised layers (reference attention, audio and temporal outputs, a text
    variant's AdaLNs), so every path, the reference features included, changes the output."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_reference_net_runs_once_per_clip_with_the_same_latents(system: str, dataset_dir: Path, tmp_path: Path):
    """Sampling fills the reference bank once and reuses it at every step: the same latents, bit for bit, as
    running the reference net at each step (a training forward), and the reference net runs once."""
    from diffusers import DDIMScheduler

    from talkinghead.sampling import denoise
    from talkinghead.models.reference_video import TRAIN_SCHEDULER

    t = Trainer(_config(system, dataset_dir, tmp_path))
    net = _woken(t.system.net)
    batch = t.batch([0, 1])
    calls = []
    net.reference_unet.register_forward_hook(lambda *_: calls.append(1))

    def run(once: bool, mb: dict) -> torch.Tensor:
        scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
        scheduler.set_timesteps(3)
        x = torch.randn(mb["target"].shape, generator=torch.Generator().manual_seed(5))
        return denoise(net.predictor(mb) if once else (lambda z, s: net.predict(z, s, mb)), scheduler, x)

    with torch.no_grad():
        mb = t.system.model_batch(batch)
        expected = run(False, mb)
        assert len(calls) == 3
        calls.clear()
        got = run(True, mb)
        assert len(calls) == 1
        assert (got - expected).abs().max().item() == 0
        other = run(True, {**mb, "ref": mb["ref"].flip(-1)})
        assert not torch.allclose(other, got)  # the recorded features do steer the result
        calls.clear()
        t.system.sample(batch, torch.Generator().manual_seed(3), steps=3)  # the trainer's and engines' sampler
        assert len(calls) == 1
        calls.clear()
        t.system.sample(batch, torch.Generator().manual_seed(3), steps=3, guidance_scale=2.0)
        assert len(calls) == 1  # both guidance branches read the one bank


def test_guidance_strengthens_the_prompt_against_the_empty_prompt(dataset_dir: Path, tmp_path: Path):
    """Hallo2's text variant: the unconditional branch of guidance reads the empty prompt's embedding (what a
    clip without a prompt, or with its audio dropped, trains with), so guidance moves the output further in the
    prompt's direction: guided - unguided = (scale - 1) (out(prompt) - out(empty prompt))."""
    from talkinghead.systems.hallo2.text import write_tiny_t5

    t5 = write_tiny_t5(tmp_path / "t5")
    system = {"name": "hallo2", "crop": "face", "crop_size": 16, "motion_heads": 2, "unet": TINY_UNET,
              "model": TINY_MODEL["hallo"], "options": {"text_encoder": str(t5)}}
    t = Trainer(_config("hallo", dataset_dir, tmp_path / "run", system=system))
    net = _woken(t.system.net)
    assert any(".text_adaln." in n for n, _ in net.named_parameters())
    batch = t.batch([0, 1])
    batch["prompt"] = ["a smiling person", "an angry person"]
    batch["drop_audio"] = torch.tensor([True, True])  # silent clips: the prompt is then the only condition
    prompts = t.system.prompts
    with torch.no_grad():
        mb = t.system.model_batch({**batch, "drop_audio": torch.tensor([False, False])})
        assert torch.equal(mb["text_embedding"], prompts.embed_batch(batch["prompt"], mb["text_embedding"]))
        # training drops the prompt with the audio: the net learns the branch guidance subtracts
        dropped = t.system.model_batch(batch)
        empty = prompts.embed_batch(["", ""], mb["text_embedding"])
        assert torch.equal(dropped["text_embedding"], empty)
        mb = {**dropped, "text_embedding": mb["text_embedding"]}  # the prompts kept, the audio dropped
        uncond = t.system.unconditional(mb)
        assert torch.equal(uncond["text_embedding"], empty) and bool(uncond["drop_audio"].all())

        from talkinghead.sampling import split_guidance

        x = torch.randn(mb["target"].shape, generator=torch.Generator().manual_seed(5))
        step = torch.tensor(500)
        both = net.predictor(mb, uncond)(x, step)  # [uncond; cond]
        plain = net.predict(x, step, mb)  # guidance 1: the conditional branch alone
        toward = plain - net.predict(x, step, uncond)  # the prompt's direction
        assert torch.equal(both[len(x):], plain)
        assert toward.abs().max() > 1e-3
        guided = split_guidance(both, 3.0)
        assert torch.allclose(guided - plain, 2.0 * toward, atol=1e-5)
        # through the sampler (audio and prompt kept): guidance changes the frames, reproducibly
        batch["drop_audio"] = torch.tensor([False, False])
        g1 = t.system.sample(batch, torch.Generator().manual_seed(3), steps=2)
        g3 = t.system.sample(batch, torch.Generator().manual_seed(3), steps=2, guidance_scale=3.0)
        assert (g1 - g3).abs().max() > 1e-3
        assert torch.equal(g3, t.system.sample(batch, torch.Generator().manual_seed(3), steps=2, guidance_scale=3.0))


def test_guidance_is_refused_for_a_system_sampled_without_it(dataset_dir: Path, tmp_path: Path):
    system = {"name": "emo", "crop": "face", "crop_size": 16, "motion_heads": 2, "unet": TINY_UNET}
    t = Trainer(_config("hallo", dataset_dir, tmp_path, system=system))
    with pytest.raises(InputError, match="must be 1") as e:
        t.system.sample(t.batch([0]), torch.Generator().manual_seed(0), steps=1, guidance_scale=2.0)
    assert e.value.field == "guidance_scale"
