"""Shared training-data fixtures: three SynthTalk clips (en-us, de, fr) and their preprocessed dataset,
made once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from talkinghead.train.preprocess import preprocess
from talkinghead.data.synth import synth

SYNTH_LANGUAGES = ("en-us", "de", "fr")
SYNTH_SIZE = 128  # px, rendered clips
DATASET_SIZE = 64  # px, preprocessed crops


@pytest.fixture(scope="session")
def synth_settings() -> dict:
    """How `synth_dir` was made (and `dataset_dir`'s crop size)."""
    return {"languages": SYNTH_LANGUAGES, "size": SYNTH_SIZE, "dataset_size": DATASET_SIZE}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Three SynthTalk clips at 128 px (2-5 s each) with their phone-timing JSON."""
    folder = tmp_path_factory.mktemp("synthtalk")
    synth(folder, clips=3, size=SYNTH_SIZE, seed=0, languages=SYNTH_LANGUAGES, progress=False)
    return folder


@pytest.fixture(scope="session")
def dataset_dir(synth_dir: Path, tmp_path_factory) -> Path:
    """The synth clips preprocessed at 64 px in this process (workers=1)."""
    folder = tmp_path_factory.mktemp("dataset")
    report = preprocess(synth_dir, folder, size=DATASET_SIZE, workers=1, progress=False)
    assert len(report.processed) == 3 and not report.skipped, report
    return folder
