"""Training adapter of EMO2 (systems/emo2/model.py): stage 1 diffuses hand motion from audio, stage 2 is EMO's reference
video net guided by rendered hand/body maps with the pose-discriminator loss. The stage label picks the net.

Both read the dataset's hand and body keypoints (shards made by `preprocess(..., body=True)`). Stage 1
splits each clip into `prev_frames` clean motion frames (continuity) and the frames it generates; motion is
body-relative (origin between the shoulders, unit = shoulder width, shoulder roll removed). Its audio is the
clip's per-frame audio windows flattened (wav2vec2 features when the dataset has them, else log-mel), so the
model's audio width is set from the data.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange

from ...errors import InputError
from ...nn.hand_motion import MotionLayout
from ...nn.pose_discriminator import pose_targets
from ...train import losses as L
from ...train.base import TrainSystem
from ..unet_adapter import System

STAGES = ("1", "2")
TINY_STAGE1 = {"dim": 32, "depth": 2, "heads": 2, "max_len": 32}
TINY_STAGE2 = {"guider_channels": [4, 8, 8, 16], "discriminator": {"channels": [8, 8], "norm_groups": 4}}


@dataclass
class EMO2Options:
    prev_frames: int = 10  # stage 1: clean motion frames of the previous clip shown to the model
    body_weight: float = 0.1  # stage 1: loss weight of the weakly supervised upper-body keypoints
    audio_dropout: float = 0.1  # stage 1: classifier-free guidance on audio
    min_hand_frames: float = 0.3  # stage 1: clips with a hand in fewer than this share of frames are skipped
    pose_loss_weight: float = 0.1  # stage 2: weight of the pose-discriminator heatmap loss
    median_kernel: int = 15  # stage 2: frames of the temporal median filter on the limb and leg keypoints

    def __post_init__(self):
        if isinstance(self.median_kernel, bool) or not isinstance(self.median_kernel, int) or \
                self.median_kernel < 1 or self.median_kernel % 2 == 0:
            raise ValueError(f"median_kernel must be an odd whole number >= 1, got {self.median_kernel!r}")


def masked_motion_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, layout: MotionLayout,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over (b, f, dim) motion that ignores masked (missing) parts and frames, with the body keypoints
    down-weighted; `weight` (b,) optional per-sample weights (e.g. Min-SNR)."""
    m = layout.feature_mask(mask) * layout.feature_weight(pred.device)
    loss = L.per_sample_mse(pred, target, m)
    if weight is not None:
        loss = loss * weight.to(loss)
    return loss.mean()


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """EMO2's pose-discriminator objective: L2 between predicted and target heatmaps (n, k, h, w), each map
    weighted by (n, k) visibility."""
    err = (pred.float() - target.float()).pow(2).mean((-2, -1))  # (n, k)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


def hand_motion_loss(net, batch: dict, scheduler, generator: torch.Generator) -> torch.Tensor:
    """Stage 1 (`systems.emo2.model.EMO2Stage1Net`): masked MSE on the x0 prediction at a random timestep; audio dropped
    with p = audio_dropout. Masked parts are zeroed before noising, so what a failed detection left there reaches
    neither input nor loss. Missing speed/amplitude conditions are measured from the target motion."""
    mask = batch["mask"]
    batch = {**net.measured_condition(batch["motion"], mask), **batch}
    x0 = batch["motion"] * net.layout.feature_mask(mask)  # missing parts: zeros, never seen by the model
    noise = torch.randn(x0.shape, generator=generator)
    t = L.sample_timesteps(scheduler, x0.shape[0], generator)
    drop = torch.rand(x0.shape[0], generator=generator) < net.config.audio_dropout
    inputs = net.denoiser_inputs(batch)
    inputs["audio"] = inputs["audio"] * (~drop).to(inputs["audio"])[:, None, None]
    pred = net.denoiser(scheduler.add_noise(x0, noise, t), t, **inputs)
    return masked_motion_loss(pred, L.diffusion_target(scheduler, x0, noise, t), mask, net.layout)


def video_losses(net, batch: dict, scheduler, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Stage 2 (`systems.emo2.model.EMO2Stage2Net`): {"diffusion": v-prediction MSE, "pose": discriminator heatmap L2
    on the x0 estimate (trains the denoiser; cos(tπ/2T)-weighted), "discriminator": the same L2 on clean
    latents (trains the discriminator), "total"}."""
    target = batch["target"]  # (b, 4, f, h, w)
    noise = torch.randn(target.shape, generator=generator)
    t = L.sample_timesteps(scheduler, target.shape[0], generator)
    noisy = scheduler.add_noise(target, noise, t)
    pred = net.predict(noisy, t, batch)
    out = {"diffusion": F.mse_loss(pred, L.diffusion_target(scheduler, target, noise, t))}
    zero = pred.new_zeros(())
    out["pose"] = out["discriminator"] = zero
    if batch.get("body") is not None:
        h, w = target.shape[-2:]
        maps, weight = pose_targets(batch["body"].flatten(0, 1), batch["body_mask"].flatten(0, 1), (h, w))
        x0 = rearrange(L.predicted_x0(scheduler, noisy, pred, t), "b c f h w -> (b f) c h w")
        clean = rearrange(target, "b c f h w -> (b f) c h w")
        out["pose"] = heatmap_loss(net.pose_discriminator.frozen(x0), maps, weight) * \
            L.spatial_weight(t, scheduler.config.num_train_timesteps).mean()
        out["discriminator"] = heatmap_loss(net.pose_discriminator(clean), maps, weight)
    out["total"] = out["diffusion"] + net.config.pose_loss_weight * out["pose"] + out["discriminator"]
    return out


def temporal_median(x: torch.Tensor, mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """(b, f, k, 2) keypoints -> the same, each point the median over a window of `kernel` frames (shrunk to
    the clip, edges replicated) of the frames where it was found (mask (b, f, k)); unseen points keep their
    value. EMO2 smooths the detected limbs this way before rendering the guidance maps."""
    f = x.shape[1]
    k = min(kernel, f if f % 2 else f - 1)
    if k <= 1:
        return x
    r = k // 2

    def pad(t: torch.Tensor) -> torch.Tensor:  # edges replicated r frames
        return torch.cat([t[:, :1].expand(-1, r, *t.shape[2:]), t, t[:, -1:].expand(-1, r, *t.shape[2:])], 1)

    seen = mask.bool()[..., None].expand_as(x)
    windows = pad(torch.where(seen, x, torch.full_like(x, float("nan")))).unfold(1, k, 1)  # (b, f, k, 2, k)
    med = windows.nanmedian(-1).values
    return torch.where(seen & med.isfinite(), med, x)


def _require_body(batch: dict) -> None:
    if "hands" not in batch:
        raise InputError("EMO2 trains on hand and body keypoints; this dataset has none",
                         "preprocess the videos again with body keypoints: "
                         "talkinghead.train.preprocess.preprocess(videos, dataset, body=True)")


def body_relative(hands: torch.Tensor, body: torch.Tensor, body_mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """hands (b, f, 2, 21, 3), body (b, f, 12, 2) in image units -> the same in body-relative units: origin
    between the shoulders (body points 0 and 1), unit = shoulder width, rotated so the shoulder line is level.
    Frames without both shoulders use the clip's mean anchor."""
    left, right = body[..., 0, :], body[..., 1, :]  # (b, f, 2)
    seen = (body_mask[..., 0] * body_mask[..., 1])[..., None]  # (b, f, 1)
    mean = lambda x: (x * seen).sum(1, keepdim=True) / seen.sum(1, keepdim=True).clamp(min=1)  # noqa: E731
    left = torch.where(seen.bool(), left, mean(left))
    right = torch.where(seen.bool(), right, mean(right))
    centre, v = (left + right) / 2, right - left
    width = v.norm(dim=-1, keepdim=True).clamp(min=1e-3)  # (b, f, 1)
    c, s = (v / width).unbind(-1)  # cos, sin of the roll
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # (b, f, 2, 2): rotate by -roll

    def to_body(p: torch.Tensor) -> torch.Tensor:  # (b, f, ..., 2)
        extra = p.dim() - 3
        shape = (*centre.shape[:2], *([1] * extra), 2)
        d = (p - centre.view(shape)) / width.view(*shape[:-1], 1)
        r = rot.view(*centre.shape[:2], *([1] * extra), 2, 2)
        return (r @ d[..., None])[..., 0]

    hands = torch.cat([to_body(hands[..., :2]), hands[..., 2:] / width.view(*width.shape[:2], 1, 1, 1)], -1)
    return hands, to_body(body)


class EMO2HandMotion(TrainSystem):
    """Stage 1: the hand-motion denoiser."""

    def __init__(self, config, audio_dim: int):
        super().__init__()
        from .model import EMO2Stage1Config, EMO2Stage1Net

        opts = EMO2System.options(config)
        self.prev = opts.prev_frames
        model = {**(TINY_STAGE1 if config.system.size == "tiny" else {}), **config.system.model,
                 "audio_dim": audio_dim, "frames": config.clip_frames, "prev_frames": self.prev,
                 "audio_dropout": opts.audio_dropout}
        cfg = EMO2Stage1Config.from_dict(model)
        if cfg.prev_frames + cfg.frames > cfg.max_len:
            raise InputError(f"prev_frames + clip_frames = {cfg.prev_frames + cfg.frames} exceeds the model's "
                             f"max_len {cfg.max_len}", "raise system.model.max_len or shorten the clips")
        cfg.layout.body_weight = opts.body_weight
        self.net = EMO2Stage1Net(cfg)
        self.scheduler = self.net.scheduler()

    def model_batch(self, batch: dict) -> dict:
        _require_body(batch)
        layout = self.net.layout
        hands, body = body_relative(batch["hands"], batch["body"], batch["body_mask"])
        body = body[..., : layout.body_points, :]
        motion = layout.pack(hands, body)  # (b, F, D)
        upper = batch["body_mask"][..., : layout.body_points].min(-1).values  # all upper-body points found
        mask = torch.cat([batch["hand_mask"], upper[..., None]], -1)  # (b, F, 3)
        feats = batch.get("audio_feats", batch["audio"])
        audio = feats.flatten(2)  # (b, F, W*...)
        audio = audio * (~batch["drop_audio"]).to(audio.dtype).view(-1, 1, 1)
        p = self.prev
        out = {"motion": motion[:, p:], "mask": mask[:, p:], "audio": audio[:, p:]}
        if p:
            out["prev"], out["prev_mask"] = motion[:, :p] * layout.feature_mask(mask[:, :p]), mask[:, :p]
        return out

    def loss(self, batch, generator):
        loss = hand_motion_loss(self.net, self.model_batch(batch), self.scheduler, generator)
        return loss, {"loss": loss.detach().item()}


class EMO2Video(System):
    """Stage 2: EMO's reference video net with the pose guider, hand-confidence embedding and pose
    discriminator; batches as EMO's (crops, optional VAE latents) plus the rendered guidance maps."""

    def __init__(self, config, options: EMO2Options):
        self.options_ = options
        super().__init__(replace(config.system, speed_layers=False))

    def _build(self, config, unet):
        from .model import EMO2Stage2Config, EMO2Stage2Net
        from ...nn.temporal import TemporalConfig

        model = {**(TINY_STAGE2 if config.size == "tiny" else {}), **config.model}
        # the discriminator reads the denoiser's space: VAE latents, or pixels when training without a VAE
        model["discriminator"] = {**model.get("discriminator", {}), "latent_channels": unet["in_channels"]}
        cfg = EMO2Stage2Config.from_dict({**model, "unet": unet, "audio_dim": 80, "audio_radius": 0,
                                          "motion": TemporalConfig(num_attention_heads=config.motion_heads),
                                          "pose_loss_weight": self.options_.pose_loss_weight})
        return EMO2Stage2Net(cfg)

    def model_batch(self, batch: dict) -> dict:
        _require_body(batch)
        out = super().model_batch(batch)
        if self.config.crop != "face":
            raise InputError("EMO2 stage 2 draws hands over the whole frame", "use system.crop: face")
        side = self.latent_size * self.net.config.map_scale
        body = temporal_median(batch["body"], batch["body_mask"], self.options_.median_kernel)
        out["pose_maps"] = self.net.guidance_maps(batch["hands"], batch["hand_mask"], body, batch["body_mask"],
                                                  (side, side)).to(out["target"])
        out["hand_confidence"] = batch["hand_mask"].to(out["target"])
        out["body"], out["body_mask"] = batch["body"], batch["body_mask"]
        return out

    def loss(self, batch, generator):
        parts = video_losses(self.net, self.model_batch(batch), self.scheduler, generator)
        return parts["total"], {"loss": parts["total"].detach().item(),
                                **{k: v.detach().item() for k, v in parts.items() if k != "total"}}


class EMO2System(TrainSystem):
    """Dispatches on the stage label: "1" hand motion, "2" guided video."""

    Options = EMO2Options

    @classmethod
    def _stage(cls, config) -> str:
        stage = str(config.stage)
        if stage not in STAGES:
            raise InputError(f"EMO2 has stages 1 (hand motion) and 2 (video), not {config.stage!r}",
                             'set stage: "1" or stage: "2"')
        return stage

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        cls._stage(config)

    @classmethod
    def make_dataset(cls, config):
        if cls._stage(config) != "1":
            return super().make_dataset(config)
        opts = cls.options(config)  # the previous clip's frames come first in each dataset clip
        dataset = super().make_dataset(replace(config, clip_frames=config.clip_frames + opts.prev_frames))

        def enough_hands(shard, start: int, n: int) -> bool:
            if "hand_mask" not in shard.keys:
                return True  # the adapter says what is missing when it reads the first batch
            present = shard.array("hand_mask", start, start + n).max(axis=1)  # (n,) a hand in the frame
            return float(present.mean()) >= opts.min_hand_frames

        dataset.keep_clips(enough_hands)
        return dataset

    @classmethod
    def from_train_config(cls, config, dataset):
        if cls._stage(config) == "1":
            item = dataset[0]
            feats = item.get("audio_feats", item["audio"])
            return EMO2HandMotion(config, int(feats[0].numel()))
        probe = dataset[0]["audio"]
        config.system.audio_tokens = int(probe.shape[1] * probe.shape[2])
        return EMO2Video(config, cls.options(config))

    @classmethod
    def smoke_overrides(cls, config):
        if cls._stage(config) == "1":
            opts = {**config.system.options, "prev_frames": 2}
            return replace(config, clip_frames=4, system=replace(config.system, options=opts))
        return replace(config, system=replace(config.system, crop="face", crop_size=16, motion_heads=2))


__all__ = ["EMO2HandMotion", "EMO2Options", "EMO2System", "EMO2Video", "body_relative", "hand_motion_loss",
           "heatmap_loss", "masked_motion_loss", "temporal_median", "video_losses"]
