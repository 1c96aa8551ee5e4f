"""Numeric parity checks of our modules against reference data made by official code: what every system's
check shares (`Check`, `compare`; the audio front end's check in verify/audio.py). Each system's checks are its
systems/<name>/verify.py.

`talkinghead verify hallo FIXTURE_DIR` runs every check that applies to the folder and prints one
line per output: its max abs difference and the tolerance it must stay under.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError


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


def fixture_folders(root: Path, is_fixture: Callable[[Path], bool], system: str, expected: str) -> list[Path]:
    """`root` and its direct subfolders that hold `system`'s reference data (`is_fixture`), in name order;
    an InputError when `root` is not a folder or holds none (`expected` says what a fixture folder holds)."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder",
                         f"pass a {system} reference-data folder (made by running the official code on a tiny config)")
    found = [p for p in [root] + sorted(q for q in root.iterdir() if q.is_dir()) if is_fixture(p)]
    if not found:
        raise InputError(f"{root} holds no {system} reference data",
                         f"expected {expected}, in the folder or a subfolder")
    return found


def verify_fixtures(root: Path, is_fixture: Callable[[Path], bool], check_fixture: Callable[[Path], list[Check]],
                    system: str, expected: str) -> list[Check]:
    """Every check of every folder under `root` (itself included) that holds `system`'s reference data, in name
    order; an InputError when there is none (see fixture_folders)."""
    return [check for folder in fixture_folders(Path(root), is_fixture, system, expected)
            for check in check_fixture(folder)]


def generator_seed(run: dict) -> int:
    """The seed of the recorded `torch.Generator(...).manual_seed(N)` in a fixture's run settings."""
    found = re.search(r"manual_seed\((\d+)\)", str(run.get("generator", "")))
    if found is None:
        raise InputError(f"config.json run.generator {run.get('generator')!r} names no seed",
                         "expected torch.Generator('cpu').manual_seed(N)")
    return int(found.group(1))
