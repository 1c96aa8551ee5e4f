"""Hallo4 as released: a Wan2.1-VACE DiT (diffusers' `WanVACETransformer3DModel`) with Hallo4's per-block audio
and condition (pose) cross-attention, its wav2vec2 audio projection and skeleton-latent pose projector, loading
the official `hallo4/model_weight.ckpt` key for key.

What the official model computes (reference data README §3), reproduced here:
- timesteps are the truncated integer σ′·1000; a float64 [cos | sin] sinusoid -> time_embedding -> e, and
  SiLU-Linear -> e0 (6 modulation vectors); text is zero-padded to `text_len` and every row is embedded;
- each block: modulated self-attention (3D RoPE, float64 complex, on interleaved pairs), text cross-attention
  over all padded rows, then audio cross-attention per latent frame (128 tokens each, zeros for the reference
  frame 0), then the FFN input is the modulated LayerNorm of x plus the condition attention, whose *queries are
  the skeleton tokens* and keys/values the normed modulated video tokens of the same latent frame; VACE hints are
  added after the listed blocks;
- every attention rounds q/k/v to bf16 and returns to the input dtype (the official flash-attention wrapper does;
  `attention_bf16=False` keeps fp32);
- audio tokens: the first frame's window repeated 4x, 3 layers per frame, LayerNorm, 4 frames grouped; pose
  tokens: per-frame Conv2d + LayerNorm on the first latent repeated 4x, 4 frames concatenated on channels; both
  get a zero frame prepended for the reference latent.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import WanVACETransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttention
from einops import rearrange
from torch import nn

from ...errors import CheckpointError
from ...models.checkpoints import load_strict

# Wan2.1-VACE-1.3B (`pretrained_models/Wan2.1_Encoders/config.json` as the reference data reconstructs it)
WAN_VACE_1_3B = {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30, "freq_dim": 256, "text_len": 512,
                 "in_dim": 16, "out_dim": 16, "eps": 1e-6, "vace_in_dim": 96, "vace_layers": list(range(0, 30, 2))}
WAN_TEXT_DIM = 4096  # fixed by the official code (not read from config.json)
HALLO4_AUDIO = {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "context_tokens": 32}
# The tiny variant `talkinghead train --smoke` and the tests train (the reference data's tiny sizes)
HALLO4_TINY = {"dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 4, "freq_dim": 32, "text_len": 12,
               "vace_layers": [0, 2], "audio": {"seq_len": 5, "blocks": 2, "channels": 16, "intermediate_dim": 32,
                                                "context_tokens": 32}}
TINY_WAN_VAE = {"base_dim": 4}  # diffusers' AutoencoderKLWan at the reference data's width (16 latent channels)
CHECKPOINT = "hallo4/model_weight.ckpt"
CONFIG = "Wan2.1_Encoders/config.json"


class Hallo4AudioProjection(nn.Module):
    """Hallo4's `audio_proj`: windows (b, F, seq_len, blocks, channels), F = 4k + 1 -> (b, (F + 3)/4, 4·tokens, dim)."""

    def __init__(self, seq_len: int = 5, blocks: int = 12, channels: int = 768, intermediate_dim: int = 512,
                 output_dim: int = 1536, context_tokens: int = 32):
        super().__init__()
        self.tokens, self.dim = context_tokens, output_dim
        self.proj1 = nn.Linear(seq_len * blocks * channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b = windows.shape[0]
        windows = torch.cat([windows[:, :1].repeat(1, 3, 1, 1, 1), windows], dim=1)  # first frame 4x
        x = torch.relu(self.proj1(windows.flatten(2)))
        x = self.proj3(torch.relu(self.proj2(x)))
        x = self.norm(x.reshape(b, x.shape[1], self.tokens, self.dim))
        return rearrange(x, "b (df four) m c -> b df (four m) c", four=4)


class PoseProjector(nn.Module):
    """Hallo4's `pose_proj`: per-video-frame skeleton latents (b, c, F, h, w) -> (b, (F + 3)/4, h/2·w/2, dim)."""

    def __init__(self, in_dim: int = 16, out_dim: int = 1536, patch_size: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim // 4, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(out_dim // 4)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        latents = torch.cat([latents[:, :, :1].repeat(1, 1, 3, 1, 1), latents], dim=2)
        x = self.proj(rearrange(latents, "b c f h w -> (b f) c h w"))
        x = self.norm(rearrange(x, "(b f) d h w -> b f (h w) d", b=b))
        return rearrange(x, "b (df four) n d -> b df n (four d)", four=4)


def sinusoid(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep sinusoid: float64, [cos | sin], frequencies 10000^(−i/half)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def rope_table(head_dim: int, positions: int = 1024) -> list[torch.Tensor]:
    """Wan's complex128 RoPE tables for the t/h/w parts of a head (d − 4⌊d/6⌋, 2⌊d/6⌋, 2⌊d/6⌋ reals)."""
    d = head_dim
    parts = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))
    out = []
    for n in parts:
        inv = 1.0 / torch.pow(10000.0, torch.arange(0, n, 2, dtype=torch.float64) / n)
        angles = torch.outer(torch.arange(positions, dtype=torch.float64), inv)
        out.append(torch.polar(torch.ones_like(angles), angles))
    return out


def apply_rope(x: torch.Tensor, grid: tuple[int, int, int], tables: list[torch.Tensor]) -> torch.Tensor:
    """x (b, l, heads, d) -> rotated in float64 complex, back to x's dtype (tokens past f·h·w untouched)."""
    f, h, w = grid
    n = f * h * w
    xc = torch.view_as_complex(x[:, :n].to(torch.float64).reshape(*x.shape[:2], x.shape[2], -1, 2))
    t, hh, ww = (tab.to(x.device) for tab in tables)
    freqs = torch.cat([t[:f].view(f, 1, 1, -1).expand(f, h, w, -1), hh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                       ww[:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(n, 1, -1)
    rotated = torch.view_as_real(xc * freqs).flatten(3).to(x.dtype)
    return torch.cat([rotated, x[:, n:]], dim=1)


def attention(attn: WanAttention, x: torch.Tensor, context: torch.Tensor | None = None, rope=None,
              bf16: bool = True) -> torch.Tensor:
    """Wan attention: q/k RMSNorm over the full width, heads, RoPE (self-attention), q/k/v rounded to bf16 as the
    official flash-attention wrapper does (`bf16`), fp32 softmax, output back in x's dtype."""
    w = attn.to_q.weight.dtype  # inputs of the projections in the weights' dtype (autocast-style with bf16 weights)
    x = x.to(w)
    ctx = x if context is None else context.to(w)
    q, k, v = attn.norm_q(attn.to_q(x)), attn.norm_k(attn.to_k(ctx)), attn.to_v(ctx)
    q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))  # (b, l, heads, d)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    dtype = q.dtype
    if bf16 and dtype not in (torch.float16, torch.bfloat16):
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = out.transpose(1, 2).flatten(2).to(dtype)
    return attn.to_out[0](out)


class Hallo4WanModel(WanVACETransformer3DModel):
    """The Hallo4 DiT with diffusers' Wan/VACE names for the backbone (see `official_to_ours` for the map).

    `forward(latents (b, 16, 1 + F', h, w), t (b,) int, context (b, L, 4096), vace_context (b, 96, 1 + F', h, w),
    skeleton_latents (b, 16, F, h, w), audio_windows (b, F, 5, layers, channels))` -> (b, 16, 1 + F', h, w)."""

    def __init__(self, dim: int = 1536, ffn_dim: int = 8960, num_heads: int = 12, num_layers: int = 30,
                 freq_dim: int = 256, text_len: int = 512, in_dim: int = 16, out_dim: int = 16, eps: float = 1e-6,
                 vace_in_dim: int = 96, vace_layers: list[int] | None = None, audio: dict | None = None,
                 attention_bf16: bool = True, **_ignored):
        vace_layers = list(range(0, num_layers, 2)) if vace_layers is None else list(vace_layers)
        super().__init__(patch_size=(1, 2, 2), num_attention_heads=num_heads, attention_head_dim=dim // num_heads,
                         in_channels=in_dim, out_channels=out_dim, text_dim=WAN_TEXT_DIM, freq_dim=freq_dim,
                         ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=True,
                         qk_norm="rms_norm_across_heads", eps=eps, image_dim=None, rope_max_seq_len=1024,
                         vace_layers=vace_layers, vace_in_channels=vace_in_dim)
        # our own constructor's arguments too, so `from_pretrained` / `from_config` rebuild the same model
        self.register_to_config(dim=dim, num_heads=num_heads, in_dim=in_dim, out_dim=out_dim, vace_in_dim=vace_in_dim,
                                text_len=text_len, audio=audio or HALLO4_AUDIO, attention_bf16=attention_bf16)
        head = dim // num_heads
        for block in self.blocks:
            block.audio_attn = WanAttention(dim, num_heads, head, eps, cross_attention_dim_head=head)
            block.audio_norm = nn.LayerNorm(dim, eps=eps)
            block.condition_attn = WanAttention(dim, num_heads, head, eps, cross_attention_dim_head=head)
            block.condition_norm = nn.LayerNorm(dim, eps=eps)
        a = {**HALLO4_AUDIO, **(audio or {})}
        self.audio_proj = Hallo4AudioProjection(a["seq_len"], a["blocks"], a["channels"], a["intermediate_dim"], dim,
                                                a["context_tokens"])
        self.pose_proj = PoseProjector(in_dim, dim, 2)
        self.ropes = rope_table(head)
        self.dim, self.text_len, self.eps, self.bf16 = dim, text_len, eps, attention_bf16
        self.trace: dict[str, torch.Tensor] | None = None  # set to a dict to record intermediates

    def _keep(self, name: str, value: torch.Tensor) -> None:
        if self.trace is not None:
            self.trace[name] = value

    def _norm(self, x: torch.Tensor) -> torch.Tensor:  # LayerNorm without affine, in fp32
        return F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x)

    def _run_block(self, block, *args):
        """One block; with gradient checkpointing on (training), its activations are recomputed in the backward."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._block, block, *args, use_reentrant=False)
        return self._block(block, *args)

    def _block(self, block, x, e0, context, rope, name, audio=None, pose=None, frames=1):
        e = (block.scale_shift_table.float() + e0.float()).chunk(6, dim=1)  # (b, 1, dim) each, fp32
        w = block.ffn.net[2].weight.dtype
        y = attention(block.attn1, self._norm(x).float() * (1 + e[1]) + e[0], rope=rope, bf16=self.bf16)
        self._keep(f"{name}.self_attn.out", y)
        x = x + y * e[2]
        y = attention(block.attn2, block.norm2(x.to(w)), context, bf16=self.bf16)
        self._keep(f"{name}.cross_attn.out", y)
        x = x + y
        if audio is not None:
            xf = rearrange(x, "b (f l) c -> (b f) l c", f=frames)
            y = attention(block.audio_attn, block.audio_norm(xf.to(w)), rearrange(audio, "b f m c -> (b f) m c"),
                          bf16=self.bf16)
            self._keep(f"{name}.audio_cross_attn.out", y)
            x = x + rearrange(y, "(b f) l c -> b (f l) c", f=frames)
        residual = x
        x = self._norm(x).float() * (1 + e[4]) + e[3]
        if pose is not None:
            xf = rearrange(x, "b (f l) c -> (b f) l c", f=frames)
            y = attention(block.condition_attn, rearrange(pose, "b f n c -> (b f) n c"), block.condition_norm(xf.to(w)),
                          bf16=self.bf16)
            self._keep(f"{name}.condition_cross_attn.out", y)
            x = x + rearrange(y, "(b f) l c -> b (f l) c", f=frames)
        y = block.ffn(x.to(w))
        self._keep(f"{name}.ffn.out", y)
        return residual + y * e[5]

    def forward(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor, vace_context: torch.Tensor,
                skeleton_latents: torch.Tensor | None = None, audio_windows: torch.Tensor | None = None,
                context_scale: float = 1.0) -> torch.Tensor:
        b = latents.shape[0]
        dtype, device = self.patch_embedding.weight.dtype, self.patch_embedding.weight.device
        latents, context, vace_context = (v.to(device, dtype) for v in (latents, context, vace_context))
        t = torch.as_tensor(t, device=device)
        if skeleton_latents is not None:
            skeleton_latents = skeleton_latents.to(device, dtype)
        if audio_windows is not None:
            audio_windows = audio_windows.to(device, dtype)
        x = self.patch_embedding(latents)  # (b, dim, f, h, w)
        self._keep("patch_embedding_out", x)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        rope = (grid, self.ropes)
        ce = self.condition_embedder
        e = ce.time_embedder.linear_2(F.silu(ce.time_embedder.linear_1(sinusoid(self.config.freq_dim, t).to(dtype))))
        self._keep("time_embedding_out", e)
        e0 = ce.time_proj(F.silu(e))
        self._keep("time_projection_out", e0)
        e0 = e0.unflatten(1, (6, self.dim))
        padded = context.new_zeros(b, self.text_len, context.shape[-1])
        padded[:, : context.shape[1]] = context[:, : self.text_len]
        text = ce.text_embedder.linear_2(F.gelu(ce.text_embedder.linear_1(padded), approximate="tanh"))
        self._keep("text_embedding_out", text)
        frames = grid[0]
        audio = pose = None
        if audio_windows is not None:
            audio = self.audio_proj(audio_windows)
            self._keep("audio_proj_out", audio)
            audio = torch.cat([torch.zeros_like(audio[:, :1]), audio], dim=1)
        if skeleton_latents is not None:
            pose = self.pose_proj(skeleton_latents)
            self._keep("pose_proj_out", pose)
            pose = torch.cat([torch.zeros_like(pose[:, :1]), pose], dim=1)
        # VACE hints
        c = self.vace_patch_embedding(vace_context)
        self._keep("vace_patch_embedding_out", c)
        c = c.flatten(2).transpose(1, 2)
        hints = []
        for i, block in enumerate(self.vace_blocks):
            if i == 0:
                c = block.proj_in(c) + x
            c = self._run_block(block, c, e0, text, rope, f"vace_blocks.{i}")
            hints.append(block.proj_out(c.to(dtype)))
            self._keep(f"vace_blocks.{i}.out", torch.stack([*hints, c]))
        vace_layers = list(self.config.vace_layers)
        for i, block in enumerate(self.blocks):
            x = self._run_block(block, x, e0, text, rope, f"blocks.{i}", audio, pose, frames)
            if i in vace_layers:
                x = x + hints[vace_layers.index(i)] * context_scale
            self._keep(f"blocks.{i}.out", x)
        shift, scale = (self.scale_shift_table.float() + e.float().unsqueeze(1)).chunk(2, dim=1)
        x = self.proj_out((self._norm(x).float() * (1 + scale) + shift).to(dtype))
        self._keep("head_out", x)
        f, h, w = grid
        p = self.config.patch_size
        out = rearrange(x, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)", f=f, h=h, w=w, pf=p[0], ph=p[1],
                        pw=p[2])
        return out


# ------------------------------------------------------------------ the official checkpoint

_TOP = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
        "text_embedding.2": "condition_embedder.text_embedder.linear_2",
        "time_embedding.0": "condition_embedder.time_embedder.linear_1",
        "time_embedding.2": "condition_embedder.time_embedder.linear_2",
        "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out"}
_ATTN = {"self_attn": "attn1", "cross_attn": "attn2", "audio_cross_attn": "audio_attn",
         "condition_cross_attn": "condition_attn"}
_PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k"}
_BLOCK = {"norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "audio_cross_norm": "audio_norm",
          "condition_cross_norm": "condition_norm", "before_proj": "proj_in", "after_proj": "proj_out"}
_BLOCK_KEY = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Hallo4 DiT state dict (Wan2.1 names + Hallo4's) -> Hallo4WanModel names. Unknown keys keep
    their name, so a strict load reports them."""
    out = {}
    for key, value in state.items():
        if key == "head.modulation":
            out["scale_shift_table"] = value
            continue
        m = re.match(r"^(blocks|vace_blocks)\.(\d+)\.modulation$", key)
        if m:
            out[f"{m[1]}.{m[2]}.scale_shift_table"] = value
            continue
        m = _BLOCK_KEY.match(key)
        if m:
            part = m[3]
            am = re.match(r"^(self_attn|cross_attn|audio_cross_attn|condition_cross_attn)\.(q|k|v|o|norm_q|norm_k)$",
                          part)
            part = f"{_ATTN[am[1]]}.{_PROJ[am[2]]}" if am else _BLOCK.get(part, part)
            out[f"{m[1]}.{m[2]}.{part}.{m[4]}"] = value
            continue
        name, _, kind = key.rpartition(".")
        out[f"{_TOP.get(name, name)}.{kind}"] = value
    return out


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `official_to_ours`."""
    top = {v: k for k, v in _TOP.items()}
    attn = {v: k for k, v in _ATTN.items()}
    proj = {v: k for k, v in _PROJ.items()}
    block = {v: k for k, v in _BLOCK.items()}
    out = {}
    for key, value in state.items():
        if key == "scale_shift_table":
            out["head.modulation"] = value
            continue
        m = re.match(r"^(blocks|vace_blocks)\.(\d+)\.scale_shift_table$", key)
        if m:
            out[f"{m[1]}.{m[2]}.modulation"] = value
            continue
        m = _BLOCK_KEY.match(key)
        if m:
            part = m[3]
            am = re.match(r"^(attn1|attn2|audio_attn|condition_attn)\.(to_q|to_k|to_v|to_out\.0|norm_q|norm_k)$", part)
            part = f"{attn[am[1]]}.{proj[am[2]]}" if am else block.get(part, part)
            out[f"{m[1]}.{m[2]}.{part}.{m[4]}"] = value
            continue
        name, _, kind = key.rpartition(".")
        out[f"{top.get(name, name)}.{kind}"] = value
    return out


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The DiT state dict of `model_weight.ckpt` (weights_only; a `state_dict` wrapper is accepted)."""
    path = Path(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only weights-only torch pickles "
                              "are loaded; re-download the file if it is truncated.") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def load_release(root: str | Path, audio: dict | None = None, **overrides) -> Hallo4WanModel:
    """The Hallo4 DiT of an official `pretrained_models/` folder: `Wan2.1_Encoders/config.json` (the VACE config
    the official loader reads) and `hallo4/model_weight.ckpt`, loaded strictly. `audio` gives the audio projection
    sizes when they differ from wav2vec2-base's (small test releases)."""
    import json

    from ...models.checkpoints import require_files

    root = Path(root)
    files = require_files(root, {"DiT config": [CONFIG], "Hallo4 DiT": [CHECKPOINT]}, "Hallo4")
    config = {**WAN_VACE_1_3B, **json.loads(files["DiT config"].read_text()), **overrides}
    model = Hallo4WanModel(**config, audio=audio)
    load_strict(model, official_to_ours(read_checkpoint(files["Hallo4 DiT"])), files["Hallo4 DiT"])
    return model.eval()


# ------------------------------------------------------------------ the Wan2.1 VAE (`Wan2.1_Encoders/Wan2.1_VAE.pth`)

VAE_FILE = "Wan2.1_Encoders/Wan2.1_VAE.pth"
_RESIDUAL = ((".residual.0.gamma", ".norm1.gamma"), (".residual.2.", ".conv1."), (".residual.3.gamma", ".norm2.gamma"),
             (".residual.6.", ".conv2."), (".shortcut.", ".conv_shortcut."))
_VAE_FIXED = {"conv1": "quant_conv", "conv2": "post_quant_conv", "encoder.conv1": "encoder.conv_in",
              "decoder.conv1": "decoder.conv_in", "encoder.head.0": "encoder.norm_out",
              "encoder.head.2": "encoder.conv_out", "decoder.head.0": "decoder.norm_out",
              "decoder.head.2": "decoder.conv_out"}


def wan_vae_to_diffusers(state: dict[str, torch.Tensor], levels: int = 4, res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Wan's own VAE names (`WanVAE_`) -> diffusers' `AutoencoderKLWan`: middle blocks to mid_block resnets /
    attention, the decoder's flat `upsamples` list to up_blocks (res_blocks + 1 resnets, then an upsampler, per
    level), the encoder's flat list kept flat as down_blocks, heads to norm_out/conv_out."""
    per_level = res_blocks + 2  # decoder: res_blocks + 1 resnets and one resample per level (none after the last)
    out = {}
    for key, value in state.items():
        name, _, kind = key.rpartition(".")
        if name in _VAE_FIXED:
            out[f"{_VAE_FIXED[name]}.{kind}"] = value
            continue
        m = re.match(r"^(encoder|decoder)\.middle\.(\d)\.(.+)$", key)
        if m:
            part = "attentions.0" if m[2] == "1" else f"resnets.{int(m[2]) // 2}"
            key = f"{m[1]}.mid_block.{part}.{m[3]}"
        m = re.match(r"^decoder\.upsamples\.(\d+)\.(.+)$", key)
        if m:
            level, j = divmod(int(m[1]), per_level)
            sub = f"upsamplers.0.{m[2]}" if j == per_level - 1 else f"resnets.{j}.{m[2]}"
            key = f"decoder.up_blocks.{level}.{sub}"
        key = key.replace("encoder.downsamples.", "encoder.down_blocks.")
        for old, new in _RESIDUAL:
            key = key.replace(old, new)
        out[key] = value
    return out


def load_wan_vae(path: str | Path, base_dim: int = 96):
    """diffusers' `AutoencoderKLWan` with the official `Wan2.1_VAE.pth` loaded strictly (weights_only);
    `base_dim` 96 at full size (the only size the official code builds; small test releases differ)."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    state = read_checkpoint(path)
    vae = AutoencoderKLWan(base_dim=base_dim)
    load_strict(vae, wan_vae_to_diffusers(state), path)
    return vae.eval()


# ------------------------------------------------------------------ Wan's umt5-xxl encoder (`models_t5_umt5-xxl-enc-bf16.pth`)

T5_FILE = "Wan2.1_Encoders/models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "Wan2.1_Encoders/google/umt5-xxl"
_T5_BLOCK = {"attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
             "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
             "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
             "norm1": "layer.0.layer_norm", "norm2": "layer.1.layer_norm", "ffn.gate.0": "layer.1.DenseReluDense.wi_0",
             "ffn.fc1": "layer.1.DenseReluDense.wi_1", "ffn.fc2": "layer.1.DenseReluDense.wo"}


def wan_t5_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's own T5 encoder names -> transformers' `UMT5EncoderModel` (gated GELU: `gate.0` is wi_0, `fc1` wi_1;
    every block keeps its own relative-position table, as umt5 does)."""
    out = {}
    for key, value in state.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif m := re.match(r"^blocks\.(\d+)\.(.+)\.weight$", key):
            out[f"encoder.block.{m[1]}.{_T5_BLOCK.get(m[2], m[2])}.weight"] = value
        else:
            out[key] = value
    return out


def wan_t5_config(state: dict[str, torch.Tensor]):
    """The `UMT5Config` of a Wan T5 encoder state dict, read from its shapes (umt5-xxl: 24 layers, 64 heads of 64,
    d_ff 10240, 32 buckets, vocab 256384)."""
    from transformers import UMT5Config

    vocab, d_model = state["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    return UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=state["blocks.0.attn.q.weight"].shape[0] // heads,
                      d_ff=state["blocks.0.ffn.fc1.weight"].shape[0], num_layers=layers, num_heads=heads,
                      relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)


def load_wan_t5(path: str | Path):
    """transformers' `UMT5EncoderModel` with Wan's T5 encoder file loaded strictly (weights_only)."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    state = read_checkpoint(path)
    model = UMT5EncoderModel(wan_t5_config(state))
    load_strict(model, {k: v.to(torch.float32) for k, v in wan_t5_to_transformers(state).items()}, path)
    return model.eval()
