"""Hallo4 as released: a Wan2.1-VACE DiT (diffusers' `WanVACETransformer3DModel`) with Hallo4's per-block audio
and condition (pose) cross-attention, its wav2vec2 audio projection and skeleton-latent pose projector, into which
the official `hallo4/model_weight.ckpt` loads key for key (systems/hallo4/release.py).

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

import torch
import torch.nn.functional as F
from diffusers import WanVACETransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttention
from einops import rearrange
from torch import nn

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
