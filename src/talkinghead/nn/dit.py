"""Talking-head conditioning for CogVideoX-style DiTs (Hallo3 §3.2–3.4, shared with Hallo4 and SkyReels):
cross layers (face attention, per-latent-frame audio attention) run between a block's 3D full attention and
its feed-forward, identity-reference features joined into self-attention, 3D RoPE, latent frame counts
and motion-frame latent conditioning.

Everything composes diffusers' `CogVideoXTransformer3DModel` / `CogVideoXBlock`: a denoiser is the upstream
model whose blocks are `ConditionedCogVideoXBlock`s (a subclass that adds named cross layers), conditions
travel to the blocks through the upstream `attention_kwargs`, and the reference features enter through
attention processors on `attn1`. Layouts follow CogVideoX: latents (b, f, c, h, w), video tokens
(b, f·h·w, d) frame-major after the text tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.attention_processor import Attention, CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import CogVideoXPatchEmbed, apply_rotary_emb, get_3d_rotary_pos_embed
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from einops import rearrange
from torch import nn

CONDITIONS_KEY = "talkinghead_conditions"  # the attention_kwargs entry that carries `DiTConditions`
COGVIDEOX_BASE_GRID = (30, 45)  # latent patches (h, w) of CogVideoX's 480x720 training size: RoPE's base grid


# ------------------------------------------------------------------ conditions passed to every block


@dataclass
class DiTConditions:
    """Per-call conditions every cross layer can read; `frames` is the latent frame count T'.

    `tokens` maps a condition name to a tensor whose layout the reading layer documents, e.g.
    "face": (b, n, d), "audio": (b, T', n, d) or per video frame (b, T, n, d) for Hallo4's modulation."""

    frames: int
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # the video tokens' 3D RoPE (cos, sin), frame-major

    def get(self, name: str) -> torch.Tensor | None:
        return self.tokens.get(name)


def conditions_kwargs(conditions: DiTConditions, attention_kwargs: dict | None = None) -> dict:
    """attention_kwargs for `CogVideoXTransformer3DModel.forward` that carry `conditions` to the blocks."""
    return {**(attention_kwargs or {}), CONDITIONS_KEY: conditions}


# ------------------------------------------------------------------ 3D RoPE and latent frames


def rope_3d(head_dim: int, frames: int, grid_height: int, grid_width: int,
            base_grid: tuple[int, int] = COGVIDEOX_BASE_GRID, device: torch.device | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """CogVideoX 3D rotary embedding (cos, sin), each (frames·grid_height·grid_width, head_dim), token order
    frame-major then row-major. The head dimension splits ¼ time, ⅜ height, ⅜ width; the patch grid is
    placed in the `base_grid` frame (resize-and-centre-crop) as CogVideoX's pipeline does, so a grid equal to
    the base grid gets integer positions 0..n−1 on every axis."""
    return get_3d_rotary_pos_embed(head_dim, grid_crop_region(grid_height, grid_width, base_grid),
                                   (grid_height, grid_width), frames, device=device)


def grid_crop_region(grid_height: int, grid_width: int, base_grid: tuple[int, int]
                     ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, left), (bottom, right)) of a grid scaled to fit the base grid's aspect and centred in it
    (the placement CogVideoX's RoPE positions use)."""
    base_h, base_w = base_grid
    if grid_height / grid_width > base_h / base_w:  # taller than the base: fit the height
        h, w = base_h, int(round(base_h / grid_height * grid_width))
    else:
        h, w = int(round(base_w / grid_width * grid_height)), base_w
    top, left = int(round((base_h - h) / 2.0)), int(round((base_w - w) / 2.0))
    return (top, left), (top + h, left + w)


def transformer_rope(transformer: CogVideoXTransformer3DModel, frames: int, height: int, width: int,
                     device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`rope_3d` for a CogVideoX transformer and latents of `frames` × `height` × `width` (None when the
    model uses no rotary embedding); the base grid is the model's sample size in patches."""
    c = transformer.config
    if not c.use_rotary_positional_embeddings:
        return None
    p = c.patch_size
    return rope_3d(c.attention_head_dim, frames, height // p, width // p, (c.sample_height // p, c.sample_width // p),
                   device)


def latent_frame_count(frames: int, ratio: int = 4) -> int:
    """Latent frames of a causal video VAE with temporal compression `ratio`: 1 + ⌈(frames − 1)/ratio⌉."""
    if frames < 1:
        raise ValueError(f"need at least one frame, got {frames}")
    return 1 + math.ceil((frames - 1) / ratio)


# ------------------------------------------------------------------ cross layers


class TokenCrossAttention(nn.Module):
    """x + Attn(LN(x), context): a pre-norm cross-attention with a zero-initialised output, so a layer
    inserted into a pretrained DiT starts as the identity (Hallo3's added face/audio layers). Queries and keys
    get a per-head LayerNorm (`qk_eps`); given a RoPE table, the queries are rotated with its first rows (the
    positions of latent frame 0, as Hallo3's face/audio attention does), keys never."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, eps: float = 1e-6,
                 qk_eps: float | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=head_dim,
                              qk_norm="layer_norm", eps=eps if qk_eps is None else qk_eps, bias=True, out_bias=True)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def attend(self, x: torch.Tensor, context: torch.Tensor,
               rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(n, l, d) tokens, (n, m, c) context -> (n, l, d)."""
        if rope is None:
            return x + self.attn(self.norm(x), encoder_hidden_states=context.to(x.dtype))
        a = self.attn
        context = context.to(x.dtype)
        q = _heads(a.to_q(self.norm(x)), a.heads)
        k, v = _heads(a.to_k(context), a.heads), _heads(a.to_v(context), a.heads)
        q, k = a.norm_q(q), a.norm_k(k)
        cos, sin = rope
        q = apply_rotary_emb(q, (cos[: q.shape[2]], sin[: q.shape[2]]))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        return x + a.to_out[1](a.to_out[0](rearrange(out, "b h l d -> b l (h d)")))


def _per_frame(x: torch.Tensor, frames: int) -> torch.Tensor:  # (b, T'·l, d) -> (b·T', l, d)
    return rearrange(x, "b (f l) d -> (b f) l d", f=frames)


class FaceAttention(TokenCrossAttention):
    """Hallo3 §3.2 face attention: the video tokens of every latent frame attend to the face encoder's identity
    tokens (b, n, c), with the queries rotated by latent frame 0's positions when the call carries a RoPE."""

    key = "face"

    def forward(self, x: torch.Tensor, conditions: DiTConditions | None) -> torch.Tensor:  # (b, T'·h·w, d)
        face = None if conditions is None else conditions.get(self.key)
        if face is None:
            return x
        frames = conditions.frames
        y = self.attend(_per_frame(x, frames), face.repeat_interleave(frames, dim=0), conditions.rope)
        return rearrange(y, "(b f) l d -> b (f l) d", f=frames)


class AudioCrossAttention(TokenCrossAttention):
    """Hallo3 §3.3 audio attention: the tokens of latent frame k attend only to that frame's audio tokens
    (b, T', n, c), so speech drives the frames it belongs to (queries rotated as in `FaceAttention`)."""

    key = "audio"

    def forward(self, x: torch.Tensor, conditions: DiTConditions | None) -> torch.Tensor:  # (b, T'·h·w, d)
        audio = None if conditions is None else conditions.get(self.key)
        if audio is None:
            return x
        frames = audio.shape[1]
        y = self.attend(_per_frame(x, frames), rearrange(audio, "b f n c -> (b f) n c"), conditions.rope)
        return rearrange(y, "(b f) l d -> b (f l) d", f=frames)


class ConditionedCogVideoXBlock(CogVideoXBlock):
    """A `CogVideoXBlock` with named cross layers run, in order, between its 3D full attention and its
    feed-forward (Hallo3: face attention, then audio attention). Each cross layer maps (b, N, d) video tokens
    and the call's `DiTConditions` (from `attention_kwargs[CONDITIONS_KEY]`) to new video tokens."""

    def __init__(self, *args, cross_layers: dict[str, nn.Module] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_layers = nn.ModuleDict(cross_layers or {})

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
                attention_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = dict(attention_kwargs or {})
        conditions = kwargs.pop(CONDITIONS_KEY, None)
        n_text = encoder_hidden_states.size(1)
        # 3D full attention over [text, video] with adaptive-norm gates (upstream modules)
        x, ctx, gate, ctx_gate = self.norm1(hidden_states, encoder_hidden_states, temb)
        x, ctx = self.attn1(hidden_states=x, encoder_hidden_states=ctx, image_rotary_emb=image_rotary_emb, **kwargs)
        hidden_states = hidden_states + gate * x
        encoder_hidden_states = encoder_hidden_states + ctx_gate * ctx
        for layer in self.cross_layers.values():  # the talking-head conditions
            hidden_states = layer(hidden_states, conditions)
        # feed-forward over [text, video]
        x, ctx, gate, ctx_gate = self.norm2(hidden_states, encoder_hidden_states, temb)
        ff = self.ff(torch.cat([ctx, x], dim=1))
        return hidden_states + gate * ff[:, n_text:], encoder_hidden_states + ctx_gate * ff[:, :n_text]


def block_kwargs(config) -> dict:
    """`CogVideoXBlock` constructor arguments of a `CogVideoXTransformer3DModel` config."""
    return dict(dim=config.num_attention_heads * config.attention_head_dim,
                num_attention_heads=config.num_attention_heads, attention_head_dim=config.attention_head_dim,
                time_embed_dim=config.time_embed_dim, dropout=config.dropout, activation_fn=config.activation_fn,
                attention_bias=config.attention_bias, norm_elementwise_affine=config.norm_elementwise_affine,
                norm_eps=config.norm_eps)


def conditioned_cogvideox(config: dict, cross_layers: Callable[[int], dict[str, nn.Module]]
                          ) -> CogVideoXTransformer3DModel:
    """An upstream `CogVideoXTransformer3DModel` built from `config` whose blocks are
    `ConditionedCogVideoXBlock`s; `cross_layers(i)` makes block i's cross layers. Parameter names of the
    upstream parts are unchanged (a CogVideoX checkpoint loads with only the cross layers missing)."""
    layers = config.get("num_layers", 30)
    model = CogVideoXTransformer3DModel(**{**config, "num_layers": 0})  # blocks are built once, below
    kw = block_kwargs(model.config)
    model.transformer_blocks = nn.ModuleList(
        [ConditionedCogVideoXBlock(**kw, cross_layers=cross_layers(i)) for i in range(layers)])
    model.register_to_config(num_layers=layers)
    return model


# ------------------------------------------------------------------ identity reference network


class ReferenceFeatureBank:
    """Per-layer video tokens of the identity reference network, (b_ref, l, d), written while `recording`."""

    def __init__(self):
        self.features: dict[int, torch.Tensor] = {}
        self.recording = False

    def clear(self) -> None:
        self.features.clear()

    def read(self, layer: int, batch: int) -> torch.Tensor | None:
        """Layer `layer`'s reference tokens tiled to `batch` rows (e.g. the two CFG halves)."""
        ref = self.features.get(layer)
        if ref is None or ref.shape[0] == batch:
            return ref
        if batch % ref.shape[0]:
            raise ValueError(f"reference batch {ref.shape[0]} does not divide the denoiser batch {batch}")
        return ref.repeat(batch // ref.shape[0], 1, 1)


class ReferenceRecordProcessor(CogVideoXAttnProcessor2_0):
    """The reference network's joint attention, unchanged, that also records its normed video tokens."""

    def __init__(self, bank: ReferenceFeatureBank, layer: int):
        super().__init__()
        self.bank, self.layer = bank, layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None):
        if self.bank.recording:
            self.bank.features[self.layer] = hidden_states
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # (b, l, h·d) -> (b, h, l, d)
    return rearrange(x, "b l (h d) -> b h l d", h=heads)


class ReferenceJointAttnProcessor:
    """Hallo3 §3.2 identity reference: the denoiser's 3D full attention over [text, video] whose keys and
    values also hold the reference network's tokens of the same layer, projected by this layer's own K/V and
    key-normed. As in the official code the reference keys are not rotated (RoPE covers the video tokens
    only); `rotate_reference=True` rotates them with latent frame 0's positions instead."""

    def __init__(self, bank: ReferenceFeatureBank, layer: int, rotate_reference: bool = False):
        self.bank, self.layer, self.rotate_reference = bank, layer, rotate_reference

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None):
        n_text = encoder_hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # (b, n_text + N, d)
        q, k, v = (_heads(proj(x), attn.heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q = torch.cat([q[:, :, :n_text], apply_rotary_emb(q[:, :, n_text:], image_rotary_emb)], dim=2)
            k = torch.cat([k[:, :, :n_text], apply_rotary_emb(k[:, :, n_text:], image_rotary_emb)], dim=2)
        ref = self.bank.read(self.layer, x.shape[0])
        if ref is not None:
            ref = ref.to(x.dtype)
            kr, vr = _heads(attn.to_k(ref), attn.heads), _heads(attn.to_v(ref), attn.heads)
            if attn.norm_k is not None:
                kr = attn.norm_k(kr)
            if image_rotary_emb is not None and self.rotate_reference:
                cos, sin = image_rotary_emb
                kr = apply_rotary_emb(kr, (cos[: kr.shape[2]], sin[: kr.shape[2]]))
            k, v = torch.cat([k, kr], dim=2), torch.cat([v, vr], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = attn.to_out[1](attn.to_out[0](rearrange(out, "b h l d -> b l (h d)")))
        return out[:, n_text:], out[:, :n_text]


def attach_identity_reference(reference: CogVideoXTransformer3DModel, denoiser: CogVideoXTransformer3DModel,
                              bank: ReferenceFeatureBank) -> None:
    """Pair block i of the reference network (recording) with block i of the denoiser (reading)."""
    if len(reference.transformer_blocks) != len(denoiser.transformer_blocks):
        raise ValueError(f"the reference network has {len(reference.transformer_blocks)} blocks, the denoiser "
                         f"{len(denoiser.transformer_blocks)}: the identity reference pairs them one to one")
    for i, (r, d) in enumerate(zip(reference.transformer_blocks, denoiser.transformer_blocks)):
        r.attn1.set_processor(ReferenceRecordProcessor(bank, i))
        d.attn1.set_processor(ReferenceJointAttnProcessor(bank, i))


# ------------------------------------------------------------------ motion frames


def motion_condition(motion_latents: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(b, m, c, h, w) latents of the motion frames (or of the portrait for the first clip) -> the I2V
    condition (b, T', c, h, w) of `like`'s shape: the m latents first, zeros after (CogVideoX-I2V layout)."""
    cond = torch.zeros_like(like)
    if motion_latents is not None:
        m = motion_latents.shape[1]
        if m > like.shape[1]:
            raise ValueError(f"{m} motion latent frames do not fit a clip of {like.shape[1]} latent frames")
        cond[:, :m] = motion_latents.to(like)
    return cond


def concat_motion_latents(noisy: torch.Tensor, motion_latents: torch.Tensor | None) -> torch.Tensor:
    """Hallo3 §3.4 long video: (b, T', c, h, w) noisy latents ⊕ (channels) the motion-frame condition ->
    (b, T', 2c, h, w), the input of an I2V CogVideoX denoiser (in_channels = 2c)."""
    return torch.cat([noisy, motion_condition(motion_latents, noisy)], dim=2)


def conditioned_forward(transformer: CogVideoXTransformer3DModel, noisy: torch.Tensor, timestep, text: torch.Tensor,
                        motion_latents: torch.Tensor | None, conditions: DiTConditions) -> torch.Tensor:
    """The denoiser's output for noisy latents (b, T', c, h, w): motion-frame latents joined on channels, the
    timestep broadcast over the batch, 3D RoPE, and `conditions` read by the blocks' cross-attention."""
    b, f, _, h, w = noisy.shape
    x = concat_motion_latents(noisy.to(transformer.dtype), motion_latents)  # (b, T', 2c, h, w), the model's dtype
    t = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
    rope = transformer_rope(transformer, f, h, w, x.device)
    conditions.rope = rope
    return transformer(x, text.to(x.dtype), t, image_rotary_emb=rope, attention_kwargs=conditions_kwargs(conditions),
                       return_dict=False)[0]


class SlicedPositionPatchEmbed(CogVideoXPatchEmbed):
    """CogVideoX's patch embedding whose learned position table is used as the official (SAT) code uses it:
    the first text + video token rows, whatever the frame count (diffusers would recompute sin-cos positions
    for a clip shorter than the training length, e.g. the one-frame identity reference)."""

    def forward(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        if not self.use_learned_positional_embeddings:
            return super().forward(text_embeds, image_embeds)
        text = self.text_proj(text_embeds)
        b, f, c, h, w = image_embeds.shape
        image = self.proj(image_embeds.reshape(-1, c, h, w))
        image = image.view(b, f, *image.shape[1:]).flatten(3).transpose(2, 3).flatten(1, 2)
        embeds = torch.cat([text, image], dim=1)
        if embeds.shape[1] > self.pos_embedding.shape[1]:
            raise ValueError(f"{embeds.shape[1]} tokens exceed the learned position table "
                             f"({self.pos_embedding.shape[1]}): the official size fixes text length and frames")
        return embeds + self.pos_embedding[:, : embeds.shape[1]].to(embeds.dtype)


def use_sliced_positions(transformer: CogVideoXTransformer3DModel) -> None:
    """Make a CogVideoX transformer read its learned position table as the official code does."""
    if getattr(transformer.config, "use_learned_positional_embeddings", False):
        transformer.patch_embed.__class__ = SlicedPositionPatchEmbed
