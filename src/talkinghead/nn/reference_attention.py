"""ReferenceNet attention (Animate Anyone / EMO / Hallo): a reference UNet writes the input of every spatial
self-attention into a bank; the denoising UNet's matching self-attention layers attend over
[own tokens, reference tokens], which carries the portrait's identity and texture into every frame.

Implemented as diffusers attention processors on `attn1` of each `BasicTransformerBlock`, so the UNets stay
upstream diffusers models. Writer and reader layers are paired by module path.
"""
from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


class ReferenceBank:
    """Reference features by layer path, shaped (groups, images, tokens, c).

    A "group" is one classifier-free-guidance half: the writer's batch is laid out as `groups` runs of
    `images` images each (image 0 the reference portrait, 1.. the motion frames). `dtype` is the dtype the
    bank is stored in: official Hallo casts it to float16 even in fp32 runs (kept by default for parity).
    `uncond_groups` leading groups of the reader's batch are the unconditional rows: they attend to
    themselves only (official CFG behaviour).
    """

    def __init__(self, dtype: torch.dtype | None = torch.float16):
        self.dtype = dtype
        self.features: dict[str, torch.Tensor] = {}  # as written, ((groups images), l, c)
        self._stored: dict[str, torch.Tensor] = {}  # cast to `dtype`, (groups, images, l, c)
        self.recording = False
        self.groups = 1
        self.uncond_groups = 0

    def clear(self) -> None:
        self.features.clear()
        self._stored.clear()

    def write(self, name: str, tokens: torch.Tensor) -> None:  # tokens ((groups images), l, c)
        self.features[name] = tokens
        stored = tokens if self.dtype is None else tokens.to(self.dtype)
        self._stored[name] = stored.reshape(self.groups, -1, *tokens.shape[1:])

    def stored(self, name: str) -> torch.Tensor | None:  # (groups, images, l, c)
        return self._stored.get(name)

    def reference(self, name: str) -> torch.Tensor | None:  # (groups, l, c): image 0 of each group
        bank = self._stored.get(name)
        return None if bank is None else bank[:, 0]

    def motion_frames(self, name: str) -> torch.Tensor | None:  # (groups, m, l, c)
        bank = self._stored.get(name)
        return None if bank is None else bank[:, 1:]


class ReferenceWriteProcessor(AttnProcessor2_0):
    """Plain self-attention that also records its input (the block's LayerNorm-1 output) in the bank."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if self.bank.recording:
            self.bank.write(self.name, hidden_states)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReadProcessor(AttnProcessor2_0):
    """Self-attention whose keys/values are [own tokens, a reference image's tokens].

    The reader's batch is (groups × frames) rows. As in the official code, the reference tokens are tiled
    over that batch rather than repeated per group: row r reads the reference of group r mod groups, so
    with CFG the conditional frames alternate between the two groups' reference features (the
    reference UNet saw them with different image tokens). Unconditional rows (the first
    `bank.uncond_groups` groups) attend to themselves only, and skip the reference work they would discard.
    """

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        reference = self.bank.reference(self.name)  # (groups, l, c)
        if reference is None:
            return super().__call__(attn, hidden_states, None, attention_mask, temb)
        groups = reference.shape[0]
        rows = hidden_states.shape[0]
        n_uncond = self.bank.uncond_groups * rows // groups
        tiled = reference.repeat(rows // groups, 1, 1)[n_uncond:]  # row r -> group r % groups
        cond = hidden_states[n_uncond:]
        out = super().__call__(attn, cond, torch.cat([cond, tiled.to(cond.dtype)], dim=1), attention_mask, temb)
        if n_uncond == 0:
            return out
        uncond = super().__call__(attn, hidden_states[:n_uncond], None, attention_mask, temb)
        return torch.cat([uncond, out], dim=0)


def transformer_block_names(unet: nn.Module) -> list[str]:
    """Paths of every spatial `BasicTransformerBlock` (the layers the reference bank pairs up)."""
    return [name for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)]


def attach_reference(writer: nn.Module, reader: nn.Module, bank: ReferenceBank) -> None:
    """Install write processors on the writer's self-attentions and read processors on the reader's.

    Every transformer block of the writer must have a twin at the same path in the reader.
    """
    writer_names = transformer_block_names(writer)
    reader_names = set(transformer_block_names(reader))
    missing = [n for n in writer_names if n not in reader_names]
    if missing:
        raise ValueError(f"reference layers without a twin in the denoising UNet: {missing[:5]}")
    for name in writer_names:
        writer.get_submodule(name).attn1.set_processor(ReferenceWriteProcessor(bank, name))
        reader.get_submodule(name).attn1.set_processor(ReferenceReadProcessor(bank, name))
