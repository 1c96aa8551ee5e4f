"""SkyReels-A1 on a tiny CogVideoX: builds, trains by its stage configs, samples deterministically, saves/loads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from talkinghead.errors import CheckpointError, InputError
from talkinghead.systems.skyreels_a1.model import OFFICIAL, TINY, TRAIN_SCHEDULER, SkyReelsA1
from talkinghead.systems.skyreels_a1.release import OFFICIAL_KEY_MAP, load_official_state
from talkinghead.train.stages import apply_stage, load_stage_config
from talkinghead.systems.skyreels_a1.train import loss_masks, skyreels_a1_loss
from tests.support import CONFIGS, fixture, manifest

F, C, H, W = 3, 4, 4, 4  # latent frames, channels, height, width (guidance: 9 frames of 16 x 16 px)


def _model(seed: int = 0) -> SkyReelsA1:
    torch.manual_seed(seed)
    return SkyReelsA1(TINY)


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(latents=torch.randn(1, F, C, H, W, generator=g), ref_latent=torch.randn(1, 1, C, H, W, generator=g),
                guidance=torch.rand(1, 3, (F - 1) * 4 + 1, 16, 16, generator=g) * 2 - 1,
                identity=torch.randn(1, 4, TINY.identity_dim, generator=g))


def test_official_config_is_cogvideox_5b_i2v_sized():
    with torch.device("meta"):
        model = SkyReelsA1(OFFICIAL)
    n = sum(p.numel() for p in model.transformer.parameters())
    assert 5.4e9 < n < 5.8e9, n  # CogVideoX-5B
    assert model.transformer.patch_embed.proj.in_channels == 3 * 16  # noise + image + landmark latents
    assert model.identity_proj[0].in_features == 1152 and model.identity_proj[2].out_features == 4096
    assert model.landmark_guider.config.block_out_channels == (128, 256, 256, 512)


def test_stage_configs_select_the_paper_stages():
    model = _model()
    s1, s2, s3 = (load_stage_config(CONFIGS / f"skyreels_a1_stage{i}.yaml", "skyreels_a1") for i in (1, 2, 3))
    names = {n for n, _ in model.named_parameters()}
    on1 = set(apply_stage(model, s1))
    assert model.transformer.gradient_checkpointing  # the stage's gradient_checkpointing: true
    assert not any(n.startswith(("landmark_guider.", "identity_proj.")) for n in on1)  # guider frozen in stage 1
    assert any(n.startswith("transformer.transformer_blocks.") for n in on1)
    on2 = set(apply_stage(model, s2))
    assert {n for n in names if n.startswith("identity_proj.")} <= on2 and not any("ff." in n for n in on2)
    assert set(apply_stage(model, s3)) == names
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(InputError, match="unknown training option"):
        from talkinghead.train.trainer import TrainConfig
        TrainConfig.from_dict({"stage": "1", "learnrate": 1.0})
    with pytest.raises(InputError, match="not 'skyreels_a1'"):
        load_stage_config(CONFIGS / "skyreels_a2.yaml", "skyreels_a1")


def test_stage1_training_lowers_loss_on_an_overfit_batch():
    model = _model()
    params = [p for n, p in model.named_parameters() if n in set(apply_stage(
        model, load_stage_config(CONFIGS / "skyreels_a1_stage1.yaml")))]
    guider_before = {k: v.clone() for k, v in model.landmark_guider.state_dict().items()}
    batch, scheduler = _batch(), DDIMScheduler(**TRAIN_SCHEDULER)
    batch["motion_mask"], batch["face_mask"] = _clip_masks()  # the losses module's flow and hull masks
    opt = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(5):
        loss = skyreels_a1_loss(model, batch, scheduler, torch.Generator().manual_seed(1))  # same noise and t every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    for k, v in model.landmark_guider.state_dict().items():
        assert torch.equal(v, guider_before[k])


def _clip_masks():
    """A 9-frame 32 x 32 clip whose bright square slides right near the top, and a face (hull) lower right."""
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    for k in range(9):
        frames[k, 4:12, 4 + k:12 + k] = 255
    face = np.array([[[16, 16], [28, 16], [28, 28], [16, 28]]] * 9, np.float32)
    return loss_masks(frames, face, (F, H, W))


def test_loss_masks_weight_motion_and_face_at_latent_size():
    motion, face = _clip_masks()
    assert motion.shape == face.shape == (F, 1, H, W)
    assert motion.min() >= 1.0 and motion.max() <= 1.5
    assert motion[:, 0, :2, :2].mean() > 1.3  # where the square moves
    assert torch.all(motion[:, 0, 3] == 1.0)  # the still bottom rows
    assert face[:, 0, 2:, 2:].mean() > 0.5 and face[:, 0, 0, 0].max() == 0.0
    pred, target = torch.zeros(1, F, C, H, W), torch.ones(1, F, C, H, W)
    from talkinghead.train.losses import face_aware_loss
    assert face_aware_loss(pred, target, motion, face) > face_aware_loss(pred, target, torch.ones_like(motion))


def test_identity_tokens_reach_the_output_once_the_mlp_is_trained():
    model = _model().eval()
    batch = _batch()
    t = torch.tensor([500])
    with torch.no_grad():
        a = model.predict(batch["latents"], t, batch)
        b = model.predict(batch["latents"], t, {**batch, "identity": -batch["identity"]})
        assert torch.equal(a, b)  # zero-initialised last layer: identity has no effect at init
        torch.nn.init.normal_(model.identity_proj[2].weight, std=0.1)
        b = model.predict(batch["latents"], t, {**batch, "identity": -batch["identity"]})
    assert not torch.allclose(a, b)
    # classifier-free guidance against zero identity: seeded, and it changes the sample once identity matters
    s1 = model.sample(batch, 2, torch.Generator().manual_seed(5))
    s3 = model.sample(batch, 2, torch.Generator().manual_seed(5), guidance_scale=3.0)
    assert torch.equal(s3, model.sample(batch, 2, torch.Generator().manual_seed(5), guidance_scale=3.0))
    assert not torch.allclose(s1, s3)


def test_sampling_is_seeded_and_save_load_round_trips(tmp_path):
    model = _model().eval()
    batch = _batch()
    a = model.sample(batch, 3, torch.Generator().manual_seed(5))
    b = model.sample(batch, 3, torch.Generator().manual_seed(5))
    c = model.sample(batch, 3, torch.Generator().manual_seed(6))
    assert a.shape == (1, F, C, H, W) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    folder = tmp_path / "a1"
    model.save_pretrained(folder)  # diffusers' layout: config.json + diffusion_pytorch_model.safetensors
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    again = SkyReelsA1.from_pretrained(folder).eval()
    assert torch.equal(again.sample(batch, 3, torch.Generator().manual_seed(5)), a)
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        (folder / "diffusion_pytorch_model.safetensors").unlink()
        SkyReelsA1.from_pretrained(folder)


def test_release_key_names_load_strictly():
    src, dst = _model(1), _model(2)
    inverse = {v: k for k, v in OFFICIAL_KEY_MAP.items()}
    release = {}
    for k, v in src.state_dict().items():
        if k.startswith("landmark_guider."):
            continue  # the release ships the guider as a separate VAE folder
        for ours, theirs in inverse.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        release[k] = v
    assert any(k.startswith("transformer.patch_embed.pose_proj.") for k in release)
    vae_state = {f"encoder.{k}": v for k, v in src.landmark_guider.encoder.state_dict().items()}
    load_official_state(dst, release, vae_state)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


# ------------------------------------------------------------------ the official release folder
@pytest.fixture(scope="module")
def a1_fixture() -> Path:
    return fixture("skyreels_a1")


def test_full_size_release_keys_equal_the_official_manifests_on_meta(a1_fixture):
    import json

    from diffusers import AutoencoderKLCogVideoX
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from talkinghead.systems.skyreels_a1.release import release_config, release_state_shapes

    configs = json.loads((a1_fixture / "manifests" / "skyreels_a1_configs.json").read_text())
    with torch.device("meta"):
        model = SkyReelsA1(release_config(configs["transformer_config_reconstructed"],
                                          configs["pose_guider_config_assumed"]))
        vae = AutoencoderKLCogVideoX.from_config(configs["vae_config"])
        guider = AutoencoderKLCogVideoX.from_config(configs["pose_guider_config_assumed"])
        siglip = SiglipVisionModel(SiglipVisionConfig(**configs["siglip_so400m_patch14_384"]["vision_config"]))
    ours = {k: list(v) for k, v in release_state_shapes(model).items()}
    assert ours == manifest("skyreels_a1", "skyreels_a1_transformer.tsv")
    assert len(ours) == 1029 and ours["patch_embed.pos_embedding"] == [1, 729 + 13 * 30 * 45, 3072]
    assert {k: list(v.shape) for k, v in vae.state_dict().items()} == manifest("skyreels_a1", "skyreels_a1_vae.tsv")
    official_guider = manifest("skyreels_a1", "skyreels_a1_pose_guider.tsv")
    assert {k: list(v.shape) for k, v in guider.state_dict().items()} == official_guider
    # our guider is that file's encoder half, key for key
    assert {f"encoder.{k}": list(v.shape) for k, v in model.landmark_guider.encoder.state_dict().items()} == {
        k: v for k, v in official_guider.items() if k.startswith("encoder.")}
    vision = {k: v for k, v in manifest("skyreels_a1", "siglip_so400m_full_siglipmodel.tsv").items()
              if k.startswith("vision_model.")}
    ours = {k if k.startswith("vision_model.") else f"vision_model.{k}": list(v.shape)
            for k, v in siglip.state_dict().items()}  # transformers 5 drops the prefix inside the vision model
    assert ours == vision


def test_release_loads_key_for_key_and_every_problem_is_named_at_once(a1_fixture, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from talkinghead.errors import CheckpointError
    from talkinghead.systems.skyreels_a1.release import load_release

    tiny = a1_fixture / "skyreels_a1_tiny"
    release = load_release(tiny, identity_encoder=False)
    file_state = load_file(str(tiny / "transformer" / "diffusion_pytorch_model.safetensors"))
    ours = release.model.state_dict()
    assert torch.equal(ours["identity_proj.0.weight"], file_state["patch_embed.pose_proj.0.weight"].float())
    assert torch.equal(ours["transformer.patch_embed.pos_embedding"], file_state["patch_embed.pos_embedding"].float())
    assert release.model.config.causal_guider is False and release.model.config.rope_base == (720, 480)
    assert type(release.scheduler()).__name__ == "CogVideoXDDIMScheduler"
    bf16 = load_release(tiny, torch.bfloat16, identity_encoder=False)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}

    # sharded transformer: index + shards load the same
    folder = tmp_path / "SkyReels-A1-5B"
    shutil.copytree(tiny, folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    keys = sorted(file_state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: file_state[k] for k in ks}, str(folder / "transformer" / name))
    import json
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    again = load_release(tmp_path, identity_encoder=False)  # the parent of SkyReels-A1-5B/ is found too
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in ours.items())

    # every missing file in one message: a shard, the scheduler, the SigLIP folder
    (folder / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError) as err:
        load_release(folder)
    for name in ("transformer/diffusion_pytorch_model-00002-of-00002.safetensors", "scheduler/scheduler_config.json",
                 "siglip-so400m-patch14-384/model.safetensors", "siglip-so400m-patch14-384/preprocessor_config.json"):
        assert name in str(err.value)

    # every key problem in one message: a missing key, an extra key, a wrong shape, across two files
    shutil.rmtree(folder)
    shutil.copytree(tiny, folder)
    t = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(t))
    del state["patch_embed.pose_proj.2.bias"]
    state["patch_embed.extra.weight"] = torch.zeros(2)
    save_file(state, str(t))
    g = folder / "pose_guider" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(g))
    state["decoder.conv_out.conv.weight"] = state["decoder.conv_out.conv.weight"][:, :1].contiguous()
    save_file(state, str(g))
    with pytest.raises(CheckpointError) as err:
        load_release(folder, identity_encoder=False)
    for text in ("patch_embed.pose_proj.2.bias", "patch_embed.extra.weight", "decoder.conv_out.conv.weight",
                 "pose_guider/", "transformer/"):
        assert text in str(err.value)


def test_training_guidance_is_the_contours_the_pipeline_renders(tmp_path: Path):
    """The landmark guider trains on the frames a trained run renders with: the clip's landmarks drawn by
    render_landmarks (depth-shaded contours), in the VAE's [-1, 1] range."""
    from talkinghead.nn.landmark_guider import guidance_tensor, render_landmarks
    from talkinghead.train.smoke import smoke_config
    from talkinghead.train.trainer import TrainConfig, Trainer

    t = Trainer(smoke_config(TrainConfig.from_yaml(CONFIGS / "skyreels_a1_stage3.yaml"), tmp_path))
    batch = t.batch([0, 1])
    guidance = t.system.model_batch(batch)["guidance"]
    h, w = batch["frames"].shape[3:5]
    for i in range(2):
        expected = guidance_tensor(render_landmarks(batch["landmarks"][i].numpy(), (w, h)))
        assert torch.equal(guidance[i:i + 1], expected.to(guidance))
    assert guidance.shape[1] == 3 and len(guidance.unique()) > 3  # shaded colours, not 0/1 dots
