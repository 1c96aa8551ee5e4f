"""Hallo2 §3.3 high-resolution enhancement: a CodeFormer-style VQGAN whose code prediction attends across
space and time. Module names follow the official `net_g.pth` (`params_ema`) so it loads key for key.

Data path of `restore` (one 512x512 face crop per frame, F frames that see each other):
  encoder (VQGAN)           (b f) 3 512 512 -> (b f) 256 16 16 low-quality latent, skip features at 256..32
  transformer               256 tokens per frame; spatial attention, then attention across the F frames
  code head                 top-1 codebook index per token; the latent becomes exact codebook rows
  AdaIN                     codebook features take the per-channel mean/std of the low-quality latent
  generator (VQGAN)         decodes, fusing the encoder's skip features with SFT (scale/shift) blocks
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

GROUPS = 32  # every GroupNorm of the VQGAN has 32 groups
NORM_EPS = 1e-6
ADAIN_EPS = 1e-5


@dataclass
class VQSuperResolutionConfig:
    """Defaults are the official network (`scripts/video_sr.py` of Hallo2); the VQGAN widths (nf, ch_mult)
    are fixed in the official constructor, everything else is its argument list."""

    img_size: int = 512  # input side; the latent is img_size / 2**(len(ch_mult) - 1)
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    codebook_size: int = 1024
    emb_dim: int = 256  # width of a codebook entry
    beta: float = 0.25  # commitment weight of the stage-I quantiser loss
    dim_embd: int = 512  # transformer width
    n_head: int = 8
    n_layers: int = 9
    latent_size: int = 256  # tokens per frame (16 x 16)
    connect_list: tuple[str, ...] = ("32", "64", "128", "256")  # resolutions with an encoder -> generator skip
    # block index after which each resolution's skip is taken (encoder) / fused (generator), as official
    fuse_encoder_block: dict = field(default_factory=lambda: {
        "512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18})
    fuse_generator_block: dict = field(default_factory=lambda: {
        "16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21})

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        self.connect_list = tuple(str(c) for c in self.connect_list)
        if self.dim_embd % self.n_head:
            raise ValueError(f"dim_embd {self.dim_embd} is not a multiple of n_head {self.n_head}")
        if min(self.nf * m for m in self.ch_mult) % GROUPS:
            raise ValueError(f"every VQGAN width must be a multiple of {GROUPS} (GroupNorm groups)")
        side = self.latent_side
        if side * side != self.latent_size:
            raise ValueError(f"latent_size {self.latent_size} != {side}x{side}, the latent grid of img_size "
                             f"{self.img_size} with {len(self.ch_mult)} levels")

    @property
    def latent_side(self) -> int:
        return self.img_size // 2 ** (len(self.ch_mult) - 1)

    @property
    def channels(self) -> dict[str, int]:
        """VQGAN width at each resolution (the official hard-coded table is this)."""
        return {str(self.img_size // 2 ** i): self.nf * m for i, m in enumerate(self.ch_mult)}

    @property
    def dim_mlp(self) -> int:
        return 2 * self.dim_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_reference_run(cls, d: dict) -> "VQSuperResolutionConfig":
        """From the `config.json` of a super-resolution reference-data folder (hallo2_sr_tiny layout)."""
        vq, cf = d["vq_constructor"], d["codeformer_constructor"]
        config = cls(img_size=vq["img_size"], nf=vq["nf"], ch_mult=vq["ch_mult"], res_blocks=vq["res_blocks"],
                     attn_resolutions=vq["attn_resolutions"], codebook_size=vq["codebook_size"],
                     emb_dim=vq["emb_dim"], beta=vq["beta"], dim_embd=cf["dim_embd"], n_head=cf["n_head"],
                     n_layers=cf["n_layers"], latent_size=cf["latent_size"], connect_list=cf["connect_list"],
                     fuse_encoder_block=d.get("fuse_encoder_block") or cls().fuse_encoder_block,
                     fuse_generator_block=d.get("fuse_generator_block") or cls().fuse_generator_block)
        table = d.get("channels_table")
        if table and {k: int(v) for k, v in table.items()} != config.channels:
            raise ValueError(f"channels_table {table} differs from nf x ch_mult {config.channels}")
        return config


# -- VQGAN parts --------------------------------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS, affine=True)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_out = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_out(x) if self.conv_out is not None else x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 convs for q, k, v and the output."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = (nn.Conv2d(c, c, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x)
        q, k, v = (rearrange(f(t), "b c h w -> b 1 (h w) c") for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, scale=int(c) ** -0.5)  # (b, 1, hw, c)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=h))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column on the bottom/right only."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Blocks(nn.Module):
    """A flat `blocks` list (the official layout), run in order."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def vq_encoder(c: VQSuperResolutionConfig) -> _Blocks:
    """3 x S x S -> emb_dim x s x s: per level res_blocks ResBlocks (+ attention at attn_resolutions) and a
    Downsample, then ResBlock-Attn-ResBlock, GroupNorm and a conv (no swish between them)."""
    widths = [c.nf * m for m in c.ch_mult]
    blocks: list[nn.Module] = [nn.Conv2d(3, c.nf, 3, padding=1)]
    ch, res = c.nf, c.img_size
    for level, width in enumerate(widths):
        for _ in range(c.res_blocks):
            blocks.append(ResBlock(ch, width))
            ch = width
            if res in c.attn_resolutions:
                blocks.append(AttnBlock(ch))
        if level != len(widths) - 1:
            blocks.append(Downsample(ch))
            res //= 2
    blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch), _norm(ch), nn.Conv2d(ch, c.emb_dim, 3, padding=1)]
    return _Blocks(blocks)


def vq_generator(c: VQSuperResolutionConfig) -> _Blocks:
    """emb_dim x s x s -> 3 x S x S, the encoder mirrored (an Upsample after every level but the last)."""
    widths = [c.nf * m for m in c.ch_mult]
    ch, res = widths[-1], c.latent_side
    blocks: list[nn.Module] = [nn.Conv2d(c.emb_dim, ch, 3, padding=1), ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
    for level in reversed(range(len(widths))):
        for _ in range(c.res_blocks):
            blocks.append(ResBlock(ch, widths[level]))
            ch = widths[level]
            if res in c.attn_resolutions:
                blocks.append(AttnBlock(ch))
        if level != 0:
            blocks.append(Upsample(ch))
            res *= 2
    blocks += [_norm(ch), nn.Conv2d(ch, 3, 3, padding=1)]
    return _Blocks(blocks)


class Codebook(nn.Module):
    """Nearest-neighbour vector quantiser (`quantize.embedding.weight` is the codebook)."""

    def __init__(self, size: int, dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(size, dim)

    def lookup(self, indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(n, h*w) indices -> (n, dim, h, w) exact codebook rows."""
        rows = self.embedding.weight[indices]  # (n, hw, dim)
        return rearrange(rows, "n (h w) d -> n d h w", h=grid[0], w=grid[1]).contiguous()  # NCHW for the convs

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage I: (n, dim, h, w) -> (quantised with straight-through gradients, codebook + beta * commitment
        loss, (n, h*w) indices)."""
        n, _, h, w = z.shape
        flat = rearrange(z, "n d h w -> (n h w) d")
        indices = torch.cdist(flat, self.embedding.weight).argmin(1).view(n, h * w)
        z_q = self.lookup(indices, (h, w))
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z_q.detach(), z)
        return z + (z_q - z).detach(), loss, indices


# -- transformer -------------------------------------------------------------------------------------------
class SpatioTemporalLayer(nn.Module):
    """Pre-LayerNorm layer: attention among one frame's tokens, an MLP, attention among one token's frames,
    an MLP. The learned position embedding goes into queries and keys only; the frame attention gets the
    token's spatial embedding for every frame (no frame position), so it is permutation-equivariant in time."""

    def __init__(self, dim: int, heads: int, dim_mlp: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.temp_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.temp_norm = nn.LayerNorm(dim)
        self.temp_ffn_norm = nn.LayerNorm(dim)
        self.temp_linear1 = nn.Linear(dim, dim_mlp)
        self.temp_linear2 = nn.Linear(dim_mlp, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, frames: int, trace: dict | None = None) -> torch.Tensor:
        """x, pos: (tokens, (b f), dim), sequence first."""
        t = self.norm1(x)
        q = t + pos
        attn = self.self_attn(q, q, t, need_weights=False)[0]
        x = x + attn
        x = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))

        n = x.shape[0]
        x = rearrange(x, "d (b f) c -> f (b d) c", f=frames)
        pos_t = rearrange(pos, "d (b f) c -> f (b d) c", f=frames)
        t = self.temp_norm(x)
        q = t + pos_t
        temp = self.temp_attn(q, q, t, need_weights=False)[0]
        x = x + temp
        x = x + self.temp_linear2(F.gelu(self.temp_linear1(self.temp_ffn_norm(x))))
        if trace is not None:
            trace["self_attn_out"], trace["temp_attn_out"] = attn, temp
        return rearrange(x, "f (b d) c -> d (b f) c", d=n)


class FuseSFT(nn.Module):
    """Encoder skip -> per-pixel scale and shift of the generator features, weighted by the fidelity w."""

    def __init__(self, c: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * c, c)
        self.scale = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(e) + self.shift(e))


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean/std of `style` on `content`; std = sqrt(unbiased var + 1e-5)."""
    def stats(t):
        flat = t.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + ADAIN_EPS).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class RestoreOutput(NamedTuple):
    video: torch.Tensor  # (b, f, 3, S, S), unclamped, about [-1, 1]
    logits: torch.Tensor  # ((b f), tokens, codebook_size)
    indices: torch.Tensor  # ((b f), tokens) int64


class VQVideoSuperResolution(nn.Module):
    """The official video super-resolution network (`net_g.pth`): restores F face crops jointly."""

    def __init__(self, config: VQSuperResolutionConfig | None = None):
        super().__init__()
        c = self.config = config or VQSuperResolutionConfig()
        self.encoder = vq_encoder(c)
        self.quantize = Codebook(c.codebook_size, c.emb_dim, c.beta)
        self.generator = vq_generator(c)
        self.position_emb = nn.Parameter(torch.zeros(c.latent_size, c.dim_embd))
        self.feat_emb = nn.Linear(c.emb_dim, c.dim_embd)
        self.ft_layers = nn.Sequential(*(SpatioTemporalLayer(c.dim_embd, c.n_head, c.dim_mlp)
                                         for _ in range(c.n_layers)))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(c.dim_embd), nn.Linear(c.dim_embd, c.codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict({s: FuseSFT(c.channels[s]) for s in c.connect_list})

    def forward(self, video: torch.Tensor, w: float = 0.5) -> torch.Tensor:
        return self.restore(video, w).video

    def encode(self, frames: torch.Tensor, trace: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(n, 3, S, S) -> (low-quality latent (n, emb_dim, s, s), skip features by resolution)."""
        c = self.config
        taken = {c.fuse_encoder_block[s]: s for s in c.connect_list}
        skips = {}
        x = frames
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if trace is not None:
                trace[f"enc.block{i}"] = x
            if i in taken:
                skips[str(x.shape[-1])] = x  # keyed by the actual width, as officially
        return x, skips

    def code_logits(self, lq_feat: torch.Tensor, frames: int, trace: dict | None = None) -> torch.Tensor:
        """(n, emb_dim, s, s) -> (n, tokens, codebook_size); n = b * frames, frame-major within a batch item."""
        x = self.feat_emb(rearrange(lq_feat, "n d h w -> (h w) n d"))  # (tokens, n, dim)
        pos = self.position_emb[:, None].expand(-1, x.shape[1], -1)
        if trace is not None:
            trace["tr.feat_emb"] = x
        for i, layer in enumerate(self.ft_layers):
            sub = {} if trace is not None else None
            x = layer(x, pos, frames, sub)
            if trace is not None:
                trace.update({f"tr.layer{i}.{k}": v for k, v in sub.items()})
                trace[f"tr.layer{i}.out"] = x
        return self.idx_pred_layer(x).transpose(0, 1)

    def decode(self, quant: torch.Tensor, skips: dict[str, torch.Tensor], w: float,
               trace: dict | None = None) -> torch.Tensor:
        """(n, emb_dim, s, s) codebook features -> (n, 3, S, S), fusing the skips when w > 0."""
        c = self.config
        fused = {c.fuse_generator_block[s] for s in c.connect_list}
        x = quant
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if trace is not None:
                trace[f"gen.block{i}"] = x
            if i in fused and w > 0:
                size = str(x.shape[-1])
                x = self.fuse_convs_dict[size](skips[size].detach(), x, w)
                if trace is not None:
                    trace[f"gen.fuse_{size}.out"] = x
        return x

    def restore(self, video: torch.Tensor, w: float = 0.5, adain_on: bool = True,
                trace: dict | None = None) -> RestoreOutput:
        """(b, f, 3, S, S) frames in [-1, 1] -> restored frames of the same size (the official `inference`)."""
        b, f = video.shape[:2]
        side = self.config.latent_side
        if tuple(video.shape[2:]) != (3, self.config.img_size, self.config.img_size):
            raise ValueError(f"expected (b, f, 3, {self.config.img_size}, {self.config.img_size}) frames, "
                             f"got {tuple(video.shape)}")
        lq_feat, skips = self.encode(rearrange(video, "b f c h w -> (b f) c h w"), trace)
        logits = self.code_logits(lq_feat, f, trace)  # (n, tokens, K)
        indices = logits.softmax(dim=2).topk(1, dim=2).indices[..., 0]  # top-1 as officially (ties alike)
        quant = self.quantize.lookup(indices, (side, side))
        if adain_on:
            quant = adain(quant, lq_feat)
        if trace is not None:
            trace.update({"enc.lq_feat": lq_feat, "tr.logits": logits, "tr.top_idx": indices[..., None],
                          "gen.input_quant_feat_adain": quant})
        out = self.decode(quant, skips, w, trace)
        return RestoreOutput(rearrange(out, "(b f) c h w -> b f c h w", b=b), logits, indices)

    def autoencode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage I on (n, 3, S, S) high-quality frames: (reconstruction, quantiser loss, (n, tokens) codes)."""
        z, _ = self.encode(frames)
        z_q, loss, codes = self.quantize(z)
        return self.decode(z_q, {}, 0.0), loss, codes
