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


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and do not stall in OpenMP barriers when other
    processes share the cores. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
