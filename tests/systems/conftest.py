"""Tiny weights for the engines that run from a weights folder, made through the same save path users get."""
from __future__ import annotations

from typing import Callable

import pytest


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, request) -> dict[str, Callable[[], list[str]]]:
    """name -> a builder that writes a tiny weights folder and returns the CLI arguments that render with it."""
    return {
        "skyreels-a1": lambda: ["--checkpoint-dir", str(request.getfixturevalue("skyreels_a1_release")), "--steps", "2"],
    }
