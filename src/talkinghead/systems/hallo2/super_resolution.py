"""Hallo2 §3.3 high-resolution enhancement: the VQ video super-resolution network (nn/vq_super_resolution.py)
loaded from a release's `hallo2/net_g.pth`, and video_sr.py's chunked restoration schedule on a frame stream.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...models.checkpoints import load_state_dict, load_strict, require_files
from ..hallo.release import RELEASE_URL, release_root

SR_CHUNK, SR_OVERLAP = 16, 4  # video_sr.py: frames per restoration, frames shared with the previous chunk


SR_FIDELITY = 0.5  # video_sr.py's default fidelity weight w


def load_super_resolution(path: Path, config=None):
    """Hallo2's video super-resolution network from `net_g.pth` (official: `{'params_ema': state}`, possibly
    with the training weights under 'params' too; only 'params_ema' is used), a flat state dict, or a
    .safetensors file. Loaded with weights_only=True, keys strict. `config`: VQSuperResolutionConfig
    (default: the official sizes)."""
    from ...errors import CheckpointError
    from ...nn.vq_super_resolution import VQVideoSuperResolution

    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_state_dict(path)
    else:
        try:
            blob = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
            raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only safetensors and "
                                  "weights-only torch pickles are loaded; re-download the file if it is "
                                  "truncated.") from exc
        state = blob.get("params_ema", blob) if isinstance(blob, dict) else blob
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} holds neither 'params_ema' nor a flat state dict of tensors "
                                  f"(top-level keys: {sorted(blob)[:8] if isinstance(blob, dict) else type(blob)})")
    net = VQVideoSuperResolution(config)
    load_strict(net, state, path)
    return net.eval()


def load_super_resolution_release(folder: str | Path, device: str = "cpu"):
    """`hallo2/net_g.pth` of a release folder (a `hallo2/net_g_config.json` written from
    VQSuperResolutionConfig.to_dict() overrides the official sizes, for small test releases)."""
    from ...nn.vq_super_resolution import VQSuperResolutionConfig

    root = release_root(Path(folder))
    files = require_files(root, {"Hallo2 super-resolution network": ["hallo2/net_g.pth", "hallo2/net_g.safetensors"]},
                          f"hallo2 ({RELEASE_URL.format(variant='hallo2')}), needed by the super-resolution stage")
    own = root / "hallo2" / "net_g_config.json"
    config = VQSuperResolutionConfig(**json.loads(own.read_text())) if own.is_file() else None
    net = load_super_resolution(files["Hallo2 super-resolution network"], config)
    # kept in fp32 whatever --dtype says: its code logits pick discrete codebook rows, and one flipped index
    # changes the output far more than any rounding
    return net.to(device=device)


def _sr_input(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 frames -> (1, f, 3, size, size) in [-1, 1]: (float32(u8 / 255) - 0.5) / 0.5, as video_sr.py."""
    import cv2

    batch = [f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
             for f in frames]
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return (((x.double() / 255.0).float() - 0.5) / 0.5)[None]


def restore_video(net, frames: Iterator[np.ndarray], w: float = SR_FIDELITY, chunk: int = SR_CHUNK,
                  overlap: int = SR_OVERLAP) -> Iterator[np.ndarray]:
    """video_sr.py's schedule on a frame stream: chunks of `chunk` frames, each starting `overlap` frames before
    the previous one ended and dropping those first `overlap` restored frames, so every frame is restored once
    with up to chunk - 1 neighbours. Output: (S, S, 3) uint8 (S = 512 officially), clamped to [-1, 1] and rounded."""
    size = net.config.img_size
    device = next(net.parameters()).device
    window: list[np.ndarray] = []
    first = True
    frames = iter(frames)
    while True:
        window += [f for _, f in zip(range(chunk - len(window)), frames)]
        if not window or (not first and len(window) <= overlap):
            return
        with torch.no_grad():
            out = net.restore(_sr_input(window, size).to(device), w).video[0]  # (f, 3, S, S)
        out = ((out.float().clamp(-1, 1) + 1) / 2 * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for frame in out[0 if first else overlap:]:
            yield frame
        done = len(window) < chunk
        first, window = False, window[-overlap:]
        if done:
            return
