"""POST /v1/dubs: a video and new speech in, a dubbed video job out, with the video jobs' limits and
errors; the job is followed, fetched and deleted at /v1/videos/{id}."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from talkinghead.assets import speech_path
from talkinghead.dub.testsrc import make_source
from talkinghead.interfaces.server import Settings, create_app
from talkinghead.io import load_audio, probe
from talkinghead.types import Speech


@contextmanager
def running(**settings):
    app = create_app(Settings(**{"workers": 1, **settings}))
    with TestClient(app) as client:
        yield client, app


@pytest.fixture(scope="module")
def speech() -> Speech:
    return load_audio(speech_path("librivox_0880")[0])


@pytest.fixture(scope="module")
def video_mp4(tmp_path_factory, speech) -> bytes:
    """1.2 s of the astronaut speaking in a 256x192 frame, as an upload's bytes."""
    path = make_source(tmp_path_factory.mktemp("dubapi") / "talk.mp4", Speech(speech.samples[:19200]), 256, 192, 160)
    return path.read_bytes()


def _post(client, video: bytes | None, audio: bytes | None, **form):
    files = {}
    if video is not None:
        files["video"] = ("talk.mp4", video)
    if audio is not None:
        files["audio"] = ("line.wav", audio)
    return client.post("/v1/dubs", files=files, data=form)


def _error(r, status: int, code: str, field: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, body
    if field is not None:
        assert body["error"]["field"] == field, body
    return body["error"]["message"]


def test_dub_job_renders_and_is_served_like_a_video(video_mp4, speech, make_wav, wait_status, tmp_path):
    with running(max_audio_seconds=30) as (client, app):
        r = _post(client, video_mp4, make_wav(speech.samples[:24000]), fit="trim")
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        assert r.headers["location"] == f"/v1/videos/{job}"
        status = wait_status(client, job, timeout=120)
        assert status["status"] == "done" and status["progress"] == 1.0, status
        out = tmp_path / "dubbed.mp4"
        out.write_bytes(client.get(f"/v1/videos/{job}/file").content)
        info = probe(out)
        assert (info["width"], info["height"], info["n_frames"]) == (256, 192, 30)  # trimmed to the video
        assert info["audio_codec"] == "aac"
        assert client.delete(f"/v1/videos/{job}").status_code == 204


def test_bad_dubs_fail_at_submit(video_mp4, speech, make_wav):
    wav = make_wav(speech.samples[:16000])
    with running(max_audio_seconds=1) as (client, app):
        assert "video" in _error(_post(client, None, wav), 422, "missing_video", "video")
        assert "audio" in _error(_post(client, video_mp4, None), 422, "missing_audio", "audio")
        assert "talk.mp4" in _error(_post(client, b"\x00" * 5000, wav), 422, "invalid_video")
        assert "no picture" in _error(_post(client, wav, wav), 422, "invalid_video")
        _error(_post(client, video_mp4, wav, fit="stretch"), 422, "invalid_option")
        _error(_post(client, video_mp4, wav, **{"face-index": "1.5"}), 422, "invalid_option", "face-index")
        _error(_post(client, video_mp4, wav, engine="warp"), 422, "invalid_option", "engine")
        _error(_post(client, video_mp4, wav), 422, "video_too_long")  # 1.2 s > the server's 1 s
        assert client.get("/v1/health").json()["jobs"] == 0


def test_dub_of_a_video_without_a_face_fails_with_the_reason(speech, make_wav, wait_status, tmp_path):
    from talkinghead.dub.testsrc import cutaway_frame
    from talkinghead.io import VideoWriter

    path = tmp_path / "shapes.mp4"
    with VideoWriter(path, 25, (160, 120)) as w:
        for i in range(10):
            w.write(cutaway_frame(160, 120, i))
    with running(max_audio_seconds=30) as (client, app):
        r = _post(client, path.read_bytes(), make_wav(np.zeros(8000, np.float32)))
        assert r.status_code == 202, r.text
        status = wait_status(client, r.json()["id"], timeout=60)
        assert status["status"] == "failed" and "no face" in status["error"], status
        assert (status["error_code"], status["error_field"]) == ("no_face", "video"), status  # for programs
        assert "talk.mp4" in status["error"] and str(app.state.service.root) not in status["error"], status
