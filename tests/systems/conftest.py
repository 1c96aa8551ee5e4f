"""Tiny weights for the engines that run from a weights folder, made through the same save path users get."""
from __future__ import annotations

from typing import Callable

import pytest


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Callable[[], list[str]]]:
    """name -> a builder that writes a tiny weights folder and returns the CLI arguments that render with it."""
    return {}
