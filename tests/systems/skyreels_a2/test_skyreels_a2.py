"""SkyReels-A2 on a tiny Wan DiT: builds, trains only what the paper trains, samples (CFG batched = serial)."""
from __future__ import annotations


import pytest
import torch

from talkinghead.errors import CheckpointError
from talkinghead.train.stages import apply_stage, load_stage_config
from talkinghead.systems.skyreels_a2.model import OFFICIAL, TINY, SkyReelsA2
from talkinghead.sampling import guided_prediction as cfg_velocity
from talkinghead.systems.skyreels_a2.train import skyreels_a2_loss
from tests.support import CONFIGS



def _model(seed: int = 0) -> SkyReelsA2:
    torch.manual_seed(seed)
    return SkyReelsA2(TINY)


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(latents=torch.randn(1, 4, 3, 4, 4, generator=g), ref_latents=torch.randn(1, 2, 4, 4, 4, generator=g),
                ref_images=torch.rand(1, 2, 3, 32, 32, generator=g) * 2 - 1)


def test_official_config_is_wan21_14b_i2v_sized():
    with torch.device("meta"):
        model = SkyReelsA2(OFFICIAL)
    n = sum(p.numel() for p in model.transformer.parameters())
    assert 16.0e9 < n < 16.8e9, n  # Wan2.1-I2V-14B with its image cross-attention
    assert model.transformer.patch_embedding.in_channels == 16 + 4 + 16
    assert model.transformer.config.num_layers == 40 and model.transformer.config.image_dim == 1280


def test_stage_trains_only_cross_attention_patch_embedding_and_image_condition_encoder():
    model = _model()
    batch = _batch()
    on = apply_stage(model, load_stage_config(CONFIGS / "skyreels_a2.yaml", "skyreels_a2"))
    assert on and all(".attn2." in n or ".norm2." in n or n.startswith(("transformer.patch_embedding.",
                      "transformer.condition_embedder.image_embedder.")) for n in on)
    assert any(".attn2.add_k_proj" in n for n in on) and "transformer.patch_embedding.weight" in on
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any(".attn1." in n for n in frozen) and any(n.startswith("image_encoder.") for n in frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(5):
        loss = skyreels_a2_loss(model, batch, torch.Generator().manual_seed(1))  # same noise and σ: an overfit batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_references_condition_the_prediction_and_dropout_removes_them():
    model = _model().eval()
    batch = _batch()
    t = torch.tensor([500.0])
    x = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = model.conditions(batch, 3)
        other = model.conditions({**batch, "ref_images": batch["ref_images"].flip(1)}, 3)
        a = model.forward_cond(x, t, cond)
        assert not torch.allclose(a, model.forward_cond(x, t, {**cond, "image_tokens": other["image_tokens"]}))
        assert not torch.allclose(a, model.forward_cond(x, t, {**cond, "spatial": other["spatial"] * 0}))
    other_batch = {**batch, "ref_latents": torch.randn(1, 2, 4, 4, 4), "ref_images": batch["ref_images"].flip(1)}
    with torch.no_grad():  # dropped references: the loss no longer depends on them
        full = skyreels_a2_loss(model, batch, torch.Generator().manual_seed(3), reference_dropout=1.0)
        swapped = skyreels_a2_loss(model, other_batch, torch.Generator().manual_seed(3), reference_dropout=1.0)
        kept = skyreels_a2_loss(model, other_batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(full, swapped)
    assert not torch.allclose(full, kept)


def test_cfg_batched_equals_serial_and_sampling_is_seeded(tmp_path):
    model = _model().eval()
    batch = _batch()
    cond = model.conditions(batch, 3)
    x = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        def predict(z, inputs):
            return model.forward_cond(z, torch.full((z.shape[0],), 700.0), inputs)
        batched = cfg_velocity(predict, x, cond, model.unconditional(cond), 5.0, "batch")
        serial = cfg_velocity(predict, x, cond, model.unconditional(cond), 5.0, "serial")
        assert torch.allclose(batched, serial, atol=1e-5)
        assert torch.equal(cfg_velocity(predict, x, cond, model.unconditional(cond), 1.0), predict(x, cond))
    a = model.sample(batch, 3, 2, torch.Generator().manual_seed(5))
    b = model.sample(batch, 3, 2, torch.Generator().manual_seed(5))
    e = model.sample(batch, 3, 2, torch.Generator().manual_seed(5), sampler="euler")
    assert a.shape == e.shape == (1, 4, 3, 4, 4) and torch.isfinite(a).all() and torch.equal(a, b)
    folder = tmp_path / "a2"
    model.save_pretrained(folder)
    again = SkyReelsA2.from_pretrained(folder).eval()
    assert torch.equal(again.sample(batch, 3, 2, torch.Generator().manual_seed(5)), a)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        SkyReelsA2.from_pretrained(folder)
