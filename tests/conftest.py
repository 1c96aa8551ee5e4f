"""Shared fixtures: real portraits and real speech, loaded once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkinghead.assets import portrait, speech_path
from talkinghead.io import load_audio
from talkinghead.types import Portrait, Speech


@pytest.fixture(scope="session")
def astronaut() -> Portrait:
    return Portrait(portrait("astronaut"), "astronaut")


@pytest.fixture(scope="session")
def grace() -> Portrait:
    return Portrait(portrait("grace_hopper"), "grace_hopper")


@pytest.fixture(scope="session")
def librivox() -> tuple[Speech, str]:
    """7.1 s of real read English speech and its transcript."""
    wav, text = speech_path("librivox_0870")
    return load_audio(wav), text


@pytest.fixture(scope="session")
def silence() -> Speech:
    return Speech(np.zeros(16000 * 3, np.float32))


HALLO_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hallo"


@pytest.fixture(scope="session")
def hallo_dir() -> Path:
    """../shared/fixtures/hallo: reference data made by the official Hallo code (CI has shared/ beside us)."""
    if not HALLO_FIXTURES.is_dir():
        pytest.skip(f"shared reference data not found at {HALLO_FIXTURES}")
    return HALLO_FIXTURES


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every model in the tests is tiny: one intra-op thread runs them fastest, and two threads stall in
    OpenMP barriers whenever another process shares the two cores (measured: a 2 s training step took 10-60 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
