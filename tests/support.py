"""What many tests share: running the real command line and reading its exit code, finding the shared reference
data and reading its checkpoint manifests, and loading a benchmark script."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks.reference_data import FIXTURES, REPO
from talkinghead.interfaces.cli import main

CONFIGS = REPO / "configs" / "train"  # the shipped training-stage YAML files

__all__ = ["CONFIGS", "FIXTURES", "REPO", "cli_exit_code", "fixture", "load_benchmark", "manifest"]


def cli_exit_code(argv) -> int:
    """Run `talkinghead ARGV` in this process (the real CLI, argument parsing included); its exit code."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def fixture(*parts: str) -> Path:
    """FIXTURES/PARTS (e.g. fixture("hallo3", "hallo3_tiny")). When it is not there the calling test fails under
    CI (which always has the shared reference data beside the clone: a missing folder is a broken set-up, not a
    reason to pass) and is skipped elsewhere (a checkout without the shared reference data)."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared reference data not found at {path}")
        pytest.skip(f"shared reference data not found at {path}")
    return path


def manifest(system: str, name: str) -> dict[str, list[int]]:
    """FIXTURES/SYSTEM/manifests/NAME, the `key<TAB>[shape]<TAB>dtype` lines of an official checkpoint: key -> shape
    (skips the calling test when it is not there)."""
    rows = (line.split("\t") for line in fixture(system, "manifests", name).read_text().splitlines() if line)
    return {key: json.loads(shape) for key, shape, *_ in rows}


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module, importing its sibling modules by name as it does when run as a script."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"{name}_bench", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
