"""EMO2 inference: per-frame wav2vec features -> stage-1 hand/arm motion on the portrait's body -> rendered hand
and keypoint maps (median-filtered limbs, hand confidence) -> stage-2 video clips, each continuing from the
previous clip's last latents, decoded and yielded one clip at a time. Weights come from a local folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...errors import InputError
from ...face.body import UPPER_LIMB, BodyKeypoints
from ...models.checkpoints import find_file, load_vae_folder
from ...models.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from ...motion.body import body_motion
from ...nn.pose_guider import MEDIAN_KERNEL, hand_confidence, median_filter
from .model import EMO2Stage1Net, EMO2Stage2Net

# what a folder must hold (label -> accepted relative paths); no official EMO2 weights are published
RELEASE_FILES = {
    "stage-1 (audio -> hand motion) config": [f"stage1/{CONFIG_FILE}"],
    "stage-1 weights": [f"stage1/{WEIGHTS_FILE}"],
    "stage-2 (video) config": [f"stage2/{CONFIG_FILE}"],
    "stage-2 weights": [f"stage2/{WEIGHTS_FILE}"],
    "VAE config": ["sd-vae-ft-mse/config.json"],
    "VAE weights": ["sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "sd-vae-ft-mse/diffusion_pytorch_model.bin"],
}
WEIGHTS_HINT = ("EMO2 has no public weights: train both stages (configs/train/emo2_stage1.yaml, "
                "emo2_stage2.yaml), save each with save_pretrained() into stage1/ and stage2/, and copy the "
                "sd-vae-ft-mse VAE folder beside them")


def missing_files(folder: str | Path) -> list[str]:
    """One line per missing part: its label and the file names accepted for it."""
    folder = Path(folder)
    return [f"{label}: {' or '.join(names)}" for label, names in RELEASE_FILES.items()
            if find_file(folder, names) is None]


@dataclass
class EMO2SamplingConfig:
    motion_steps: int = 20  # stage-1 DDIM steps
    motion_guidance: float = 1.0  # classifier-free guidance on audio for the hand motion
    video_steps: int = 20  # stage-2 DDIM steps
    clip_frames: int = 12  # stage-2 frames per clip
    motion_frames: int = 2  # stage-2 latents carried from one clip to the next
    median_kernel: int = MEDIAN_KERNEL  # frames, temporal median filter of the arm keypoints
    seed: int = 0


class EMO2Pipeline:
    def __init__(self, stage1: EMO2Stage1Net, stage2: EMO2Stage2Net, vae, sampling: EMO2SamplingConfig | None = None):
        self.stage1, self.stage2, self.vae = stage1.eval(), stage2.eval(), vae.eval()
        self.sampling = sampling or EMO2SamplingConfig()

    @classmethod
    def from_pretrained(cls, folder: str | Path, sampling: EMO2SamplingConfig | None = None) -> "EMO2Pipeline":
        """From a local folder (stage1/ and stage2/ written by each net's save_pretrained, sd-vae-ft-mse/);
        never downloads. Every missing file is named in one InputError."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"EMO2 weights folder {folder} does not exist", WEIGHTS_HINT)
        missing = missing_files(folder)
        if missing:
            raise InputError(f"{folder} is missing EMO2 weights:\n  " + "\n  ".join(missing), WEIGHTS_HINT)
        return cls(EMO2Stage1Net.from_pretrained(folder / "stage1"), EMO2Stage2Net.from_pretrained(folder / "stage2"),
                   load_vae_folder(folder / "sd-vae-ft-mse"), sampling)

    # -- stage 1 ------------------------------------------------------------------------------------
    def motion(self, audio: torch.Tensor, body: BodyKeypoints) -> dict[str, np.ndarray] | None:
        """(n, t, d) audio features -> {"hands" (n, 2, 21, 3), "arms" (n, 6, 2)} in portrait pixels, or None
        when the portrait shows no shoulders."""
        s = self.sampling
        return body_motion(self.stage1, audio, body, steps=s.motion_steps, seed=s.seed,
                           guidance_scale=s.motion_guidance)

    def guidance(self, motion: dict[str, np.ndarray] | None, body: BodyKeypoints, frames: int,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (1, 4, n, h, w) and hand confidence (1, n, 2) for n frames. Arms come from the stage-1 motion
        (median-filtered over time), legs from the portrait; without motion the portrait's own keypoints
        are held and hands count as missing."""
        w, h = body.image_size
        norm = torch.tensor([w, h], dtype=torch.float32)
        kps = torch.from_numpy(np.nan_to_num(body.body)).float().expand(frames, -1, -1).clone() / norm  # (n, 12, 2)
        kps_mask = torch.from_numpy(body.body_mask).expand(frames, -1).clone()  # (n, 12)
        if motion is None:
            hands = torch.zeros(frames, 2, 21, 2)
            hand_mask = torch.zeros(frames, 2, dtype=torch.bool)
        else:
            hands = torch.from_numpy(motion["hands"][:frames, ..., :2]).float() / norm
            hand_mask = torch.ones(frames, 2, dtype=torch.bool)
            arms = torch.from_numpy(motion["arms"][:frames]).float() / norm
            kps[:, : len(UPPER_LIMB)] = median_filter(arms, self.sampling.median_kernel)
            kps_mask[:, : len(UPPER_LIMB)] = True
        maps = self.stage2.guidance_maps(hands[None], hand_mask[None], kps[None], kps_mask[None], size)
        return maps, hand_confidence(hands, hand_mask)[None]

    # -- stage 2 ------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> torch.Tensor:  # (H, W, 3) uint8 -> (1, 4, h, w)
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> np.ndarray:  # (1, 4, f, h, w) -> (f, H, W, 3) uint8
        z = latents[0].transpose(0, 1) / self.vae.config.scaling_factor
        pixels = self.vae.decode(z).sample
        return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    @torch.no_grad()
    def frames(self, image: np.ndarray, audio: torch.Tensor, body: BodyKeypoints) -> Iterator[np.ndarray]:
        """RGB uint8 portrait (H, W, 3), per-frame audio features (n, t, d) (e.g. wav2vec's
        `hallo_audio_embeddings`), the portrait's keypoints -> n frames (H, W, 3) uint8, clip by clip."""
        s, n = self.sampling, audio.shape[0]
        ref = self.encode(image)  # (1, 4, h, w)
        scale = self.stage2.config.map_scale
        maps, confidence = self.guidance(self.motion(audio, body), body, n,
                                         (ref.shape[-2] * scale, ref.shape[-1] * scale))
        motion_latents = ref[:, None].expand(1, s.motion_frames, -1, -1, -1)  # the portrait until frames exist
        generator = torch.Generator().manual_seed(s.seed)
        for start in range(0, n, s.clip_frames):
            stop = min(start + s.clip_frames, n)
            idx = torch.arange(start, start + s.clip_frames).clamp(max=n - 1)  # last clip: repeat the final frame
            batch = {"ref": torch.cat([ref[:, None], motion_latents], 1), "audio": audio[idx][None],
                     "pose_maps": maps[:, :, idx], "hand_confidence": confidence[:, idx]}
            latents = self.stage2.sample(batch, s.clip_frames, s.video_steps, generator)  # (1, 4, f, h, w)
            if s.motion_frames:
                motion_latents = latents[:, :, stop - start - s.motion_frames: stop - start].transpose(1, 2)
            yield from self.decode(latents[:, :, : stop - start])
