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


@pytest.fixture(scope="session")
def hallo_release(hallo_dir, tmp_path_factory) -> Path:
    """A tiny release folder in the official layout, weights from the shared reference data:
    pretrained_models/{hallo,hallo2}/net.pth + config.json, sd-vae-ft-mse/, wav2vec/wav2vec2-base-960h/."""
    import json
    import shutil

    from talkinghead.models.hallo import HalloConfig

    root = tmp_path_factory.mktemp("release") / "pretrained_models"
    net, audio = hallo_dir / "hallo_tiny", hallo_dir / "hallo_audio_tiny"
    fixture_config = json.loads((net / "config.json").read_text())
    for variant in ("hallo", "hallo2"):
        (root / variant).mkdir(parents=True)
        shutil.copy(net / "net.pth", root / variant / "net.pth")
        (root / variant / "config.json").write_text(
            json.dumps(HalloConfig.from_reference_run(fixture_config).to_dict()))
    vae = root / "sd-vae-ft-mse"
    vae.mkdir()
    shutil.copy(net / "vae_tiny.safetensors", vae / "diffusion_pytorch_model.safetensors")
    (vae / "config.json").write_text(json.dumps(fixture_config["vae_constructor_kwargs"]))
    w2v = root / "wav2vec" / "wav2vec2-base-960h"
    w2v.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(audio / name, w2v / name)
    return root


@pytest.fixture(scope="session")
def face_embedding_file(tmp_path_factory) -> Path:
    """A 512-d identity vector file, as `--face-embedding` takes."""
    path = tmp_path_factory.mktemp("emb") / "face.npy"
    np.save(path, np.random.default_rng(0).normal(size=512).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def short_wav(librivox, tmp_path_factory) -> Path:
    """0.9 s of real speech as a 16 kHz wav file: 23 frames at 25 fps, two 16-frame clips for the diffusion engines."""
    import wave

    speech, _ = librivox
    path = tmp_path_factory.mktemp("wav") / "short.wav"
    pcm = (np.clip(speech.samples[: int(0.9 * speech.sample_rate)], -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(speech.sample_rate)
        w.writeframes(pcm.tobytes())
    return path
