"""Numeric parity checks of our modules against reference data made by official code: what every system's
check shares (`Check`, `compare`; the audio front end's check in verify/audio.py). Each system's checks are its
systems/<name>/verify.py.

`talkinghead verify hallo FIXTURE_DIR` runs every check that applies to the folder and prints one
line per output: its max abs difference and the tolerance it must stay under.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Check:
    """One compared output: `name` (the fixture key), its max abs difference and the tolerance."""

    name: str
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance  # NaN fails

    def line(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return f"{verdict} {self.name:<48} max|diff| {self.max_abs_diff:.3e}  (tolerance {self.tolerance:.2g})"


def compare(name: str, ours: torch.Tensor, ref: torch.Tensor, tolerance: float) -> Check:
    """Max abs difference of two tensors of the same shape (a shape mismatch is an infinite difference)."""
    if tuple(ours.shape) != tuple(ref.shape):
        return Check(f"{name} (shape {tuple(ours.shape)} vs {tuple(ref.shape)})", float("inf"), tolerance)
    diff = (ours.detach().float().cpu() - ref.detach().float().cpu()).abs()
    value = float(diff.max()) if diff.numel() else 0.0
    if torch.isnan(diff).any():
        value = float("nan")
    return Check(name, value, tolerance)
