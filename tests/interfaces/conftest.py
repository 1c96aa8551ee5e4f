"""Fixtures for the HTTP server tests: real media as the bytes a client uploads, and small helpers."""
from __future__ import annotations

import io
import time
import wave

import cv2
import numpy as np
import pytest

from talkinghead.assets import portrait
from talkinghead.audio.tts import synthesize
from talkinghead.types import SAMPLE_RATE, Speech


def _encode(ext: str, rgb: np.ndarray) -> bytes:
    """RGB array -> the bytes of an image file of type `ext`."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def portrait_png() -> bytes:
    """The astronaut portrait as a PNG file's bytes."""
    return _encode(".png", portrait("astronaut"))


@pytest.fixture(scope="session")
def portrait_jpg() -> bytes:
    """The astronaut portrait as a (smaller) JPEG file's bytes."""
    return _encode(".jpg", portrait("astronaut"))


@pytest.fixture(scope="session")
def pcm16():
    """float32 samples -> 16 kHz mono int16 little-endian bytes (the stream's audio format)."""
    def convert(samples: np.ndarray) -> bytes:
        """The samples as int16 LE bytes."""
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return convert


@pytest.fixture(scope="session")
def make_wav(pcm16):
    """float32 samples at 16 kHz -> a WAV file's bytes."""
    def make(samples: np.ndarray) -> bytes:
        """The samples as a 16 kHz mono WAV file."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm16(samples))
        return buf.getvalue()
    return make


@pytest.fixture(scope="session")
def hello_speech() -> Speech:
    """~0.8 s of real speech from espeak-ng."""
    return synthesize("Hello there.", voice="en-us")


@pytest.fixture(scope="session")
def hello_wav(make_wav, hello_speech) -> bytes:
    """The espeak-ng speech as a WAV file's bytes."""
    return make_wav(hello_speech.samples)


@pytest.fixture(scope="session")
def wait_status():
    """Poll GET /v1/videos/{id} (with any httpx-like client) until its status is in `states`."""
    def wait(client, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 60.0, headers=None) -> dict:
        """The job's status once it is in `states` (fails after `timeout` s)."""
        end = time.monotonic() + timeout
        while True:
            r = client.get(f"/v1/videos/{job_id}", headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in states:
                return body
            assert time.monotonic() < end, f"job {job_id} still {body} after {timeout} s"
            time.sleep(0.02)
    return wait
