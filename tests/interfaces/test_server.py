"""`talkinghead serve`, route by route, with FastAPI's TestClient and the real warp engine, PyAV and
espeak-ng on tiny renders: every route, every refusal (one JSON error body: a stable code, the field to blame,
the library's message), cancel and remove, expiry, auth, and that nothing is left on disk."""
from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import WebSocketDenialResponse

from talkinghead.assets import speech_path
from talkinghead.audio.features import n_frames
from talkinghead.config import config_from_options
from talkinghead.errors import InputError, TooLongError
from talkinghead.interfaces.server import Settings, create_app, make_settings, serve
from talkinghead.io import load_audio, load_image, probe

SMALL = {"size": "128"}


@contextmanager
def running(**settings):
    """A TestClient around a fresh app (lifespan run), yielding (client, app)."""
    app = create_app(Settings(**{"workers": 1, **settings}))
    with TestClient(app) as client:
        yield client, app


@pytest.fixture(scope="module")
def api():
    """One app (one render thread) shared by the tests that need no special settings."""
    with running(max_audio_seconds=30) as (client, app):
        yield client, app


def leftovers(app) -> list[str]:
    """Every file or folder under the server's private temp folder."""
    return sorted(str(p.relative_to(app.state.service.root)) for p in app.state.service.root.rglob("*"))


def assert_error(r, status: int, code: str, field: str | None = None) -> dict:
    """The response is the one error body with this status, code and (when given) field; returns the error."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]) <= {"code", "message", "field"}, body
    assert body["error"]["code"] == code, body
    if field is not None:
        assert body["error"]["field"] == field, body
    assert r.headers["content-type"] == "application/json"
    return body["error"]


def post(client, image: bytes | None, audio: bytes | None = None, image_name: str = "face.png",
         audio_name: str = "speech.wav", **form):
    """POST /v1/videos with optional image/audio files and form fields."""
    files = {}
    if image is not None:
        files["image"] = (image_name, image)
    if audio is not None:
        files["audio"] = (audio_name, audio)
    return client.post("/v1/videos", files=files, data=form)


def check_mp4(data: bytes, tmp_path, size: int, fps: float, seconds: float) -> dict:
    """The bytes are an H.264 + AAC mp4 of the expected geometry and length."""
    path = tmp_path / "got.mp4"
    path.write_bytes(data)
    info = probe(path)
    assert (info["width"], info["height"]) == (size, size)
    assert info["video_codec"] == "h264" and info["fps"] == pytest.approx(fps)
    assert info["n_frames"] == n_frames(seconds, fps)
    assert info["audio_codec"] == "aac" and info["audio_duration"] == pytest.approx(seconds, abs=0.05)
    return info


# ------------------------------------------------------------------------------------------ happy paths
def test_submit_poll_download_and_delete(api, portrait_png, hello_wav, hello_speech, wait_status, tmp_path):
    """The whole life of a job: 202, done, a valid mp4, 204, 404, no files left."""
    client, app = api
    r = post(client, portrait_png, hello_wav, **SMALL, **{"head-motion": "0.5", "seed": "3"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/videos/{job_id}"
    status = wait_status(client, job_id)
    assert status == {"id": job_id, "status": "done", "progress": 1.0, "error": None}

    video = client.get(f"/v1/videos/{job_id}/file")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    check_mp4(video.content, tmp_path, 128, 25.0, hello_speech.duration)
    assert leftovers(app) == [job_id, f"{job_id}/video.mp4"]  # the inputs are gone once rendered

    assert client.delete(f"/v1/videos/{job_id}").status_code == 204
    assert_error(client.get(f"/v1/videos/{job_id}"), 404, "not_found")
    assert leftovers(app) == []


def test_text_is_spoken_with_the_controls(api, portrait_png, wait_status, tmp_path):
    """`text` instead of audio is spoken by espeak-ng; controls named like CLI options apply."""
    client, _ = api
    r = post(client, portrait_png, text="Good morning!", voice="en-us", fps="20", **SMALL,
             **{"lips-only": "true", "blink-rate": "0", "gaze": "wander"})
    assert r.status_code == 202, r.text
    assert wait_status(client, r.json()["id"])["status"] == "done"
    data = client.get(f"/v1/videos/{r.json()['id']}/file").content
    path = tmp_path / "spoken.mp4"
    path.write_bytes(data)
    info = probe(path)
    assert info["fps"] == pytest.approx(20.0) and info["n_frames"] >= 10 and info["audio_codec"] == "aac"
    assert client.delete(f"/v1/videos/{r.json()['id']}").status_code == 204


def test_audio_with_text_is_aligned_and_rendered(api, portrait_png, make_wav, wait_status):
    """Audio + its transcript (pocketsphinx alignment) renders."""
    client, _ = api
    wav, transcript = speech_path("librivox_0880")
    speech = load_audio(wav)
    r = post(client, portrait_png, make_wav(speech.samples), text=transcript, size="64")
    assert r.status_code == 202, r.text
    assert wait_status(client, r.json()["id"])["status"] == "done"
    assert client.delete(f"/v1/videos/{r.json()['id']}").status_code == 204


def test_health_and_openapi_describe_the_service(api):
    """Health counts; the OpenAPI form lists the controls (not the operator's) and the stream protocol."""
    client, _ = api
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["workers"] == 1 and health["streams"] == 0
    spec = client.get("/openapi.json").json()
    assert {"/v1/videos", "/v1/videos/{job_id}", "/v1/videos/{job_id}/file", "/v1/health"} <= set(spec["paths"])
    form = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary" and form["required"] == ["image"]
    assert {"head-motion", "lips-only", "face-index", "engine", "text", "voice"} <= set(form["properties"])
    assert not {"checkpoint-dir", "face-embedding", "device"} & set(form["properties"])
    assert "WS /v1/stream" in spec["info"]["description"] and "pcm_s16le" in spec["info"]["description"]


def test_openapi_documents_every_error_code_and_the_error_field(api):
    """Every code a route or the stream may send is listed in the API description with its status (or close
    code); each error response lists its codes; the error body declares the optional `field`."""
    from talkinghead.interfaces.server import CODES, STREAM_CODES

    client, _ = api
    spec = client.get("/openapi.json").json()
    description = spec["info"]["description"]
    for code, (status, _) in {**CODES, **STREAM_CODES}.items():
        assert f"| `{code}` | {status} |" in description
    submit = spec["paths"]["/v1/videos"]["post"]["responses"]
    assert "invalid_option" in submit["422"]["description"] and "audio_too_long" in submit["422"]["description"]
    assert "queue_full" in submit["429"]["description"]
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"} and "field" in detail["properties"]


# ------------------------------------------------------------------------------------------ refusals
def _gradient_png() -> bytes:
    """A colourful picture without a face."""
    import io

    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    img = np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 99, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


BAD = {  # name -> (form, expected code, expected field); "IMG" / "WAV" stand for the good files
    "not an image": ({"image": ("notes.png", b"this is not a picture"), "audio": "WAV"}, "invalid_image", "image"),
    "no face": ({"image": ("gradient.png", "GRADIENT"), "audio": "WAV"}, "invalid_image", "image"),
    "face index past the faces": ({"image": "IMG", "audio": "WAV", "face-index": "3"}, "invalid_image", None),
    "not audio": ({"image": "IMG", "audio": ("speech.mp3", b"no sound in here")}, "invalid_audio", "audio"),
    "empty audio": ({"image": "IMG", "audio": ("speech.wav", b"")}, "invalid_audio", "audio"),
    "bad option value": ({"image": "IMG", "audio": "WAV", "head-motion": "5"}, "invalid_option", "head-motion"),
    "not a number": ({"image": "IMG", "audio": "WAV", "seed": "many"}, "invalid_option", "seed"),
    "unknown option": ({"image": "IMG", "audio": "WAV", "wobble": "1"}, "invalid_option", None),
    "unknown engine": ({"image": "IMG", "audio": "WAV", "engine": "magic"}, "invalid_option", "engine"),
    "diffusion without checkpoints": ({"image": "IMG", "audio": "WAV", "engine": "hallo"}, "engine_unavailable",
                                      "engine"),
    "client checkpoint dir": ({"image": "IMG", "audio": "WAV", "checkpoint-dir": "/etc"}, "option_not_allowed",
                              "checkpoint-dir"),
    "client face embedding": ({"image": "IMG", "audio": "WAV", "face-embedding": "/etc/passwd"},
                              "option_not_allowed", "face-embedding"),
    "client device": ({"image": "IMG", "audio": "WAV", "device": "cuda:0"}, "option_not_allowed", "device"),
    "no image": ({"audio": "WAV"}, "missing_image", "image"),
    "no audio or text": ({"image": "IMG"}, "missing_audio", "audio"),
    "empty text": ({"image": "IMG", "text": "   "}, "invalid_text", "text"),
    "unknown voice": ({"image": "IMG", "text": "hello", "voice": "klingon"}, "invalid_text", None),
    "text that is a server path": ({"image": "IMG", "audio": "WAV", "text": "/etc/passwd.txt"}, None, None),
    "third file": ({"image": "IMG", "audio": "WAV", "extra": ("x.bin", b"123")}, "invalid_option", "extra"),
}


@pytest.mark.filterwarnings("ignore:pocketsphinx could not align")  # words that are not what is said
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_fail_at_submit_with_one_clear_message(api, case, portrait_png, hello_wav, wait_status):
    """Each bad submission is refused at once (422) with its code and the field to blame, leaving no file and
    no job."""
    client, app = api
    spec, code, field = BAD[case]
    stand_in = {"IMG": ("face.png", portrait_png), "WAV": ("speech.wav", hello_wav)}
    files, data = {}, {}
    for name, value in spec.items():
        value = stand_in.get(value, value) if isinstance(value, str) else value
        if isinstance(value, tuple):
            files[name] = (value[0], _gradient_png() if value[1] == "GRADIENT" else value[1])
        else:
            data[name] = value
    r = client.post("/v1/videos", files=files, data=data)
    if code is None:  # a transcript that looks like a path is only words: never opened
        assert r.status_code == 202, r.text
        assert wait_status(client, r.json()["id"])["status"] == "done"
        assert client.delete(f"/v1/videos/{r.json()['id']}").status_code == 204
        return
    error = assert_error(r, 422, code, field)
    assert "how to fix:" in error["message"]
    assert str(app.state.service.root) not in error["message"]  # server paths never leak
    assert leftovers(app) == []  # a refused upload leaves nothing behind
    assert client.get("/v1/health").json()["jobs"] == 0


def api_words(e: InputError, field: str, labels: dict[str, str] | None = None) -> str:
    """A library error as the API words it: its field named like the form field, the fix on a second line."""
    text = e.text(field) + (f"\n  how to fix: {e.hint}" if e.hint else "")
    for path, label in (labels or {}).items():
        text = text.replace(path, label)
    return text


def test_bad_media_gets_the_library_message_with_the_clients_file_name(api, hello_wav, tmp_path):
    """The message is the library's, its field named as the API names it and the client's file named, never
    a server path; the field to blame comes with it."""
    client, _ = api
    local = tmp_path / "notes.png"
    local.write_bytes(b"this is not a picture")
    with pytest.raises(InputError) as lib:
        load_image(local)
    error = assert_error(post(client, local.read_bytes(), hello_wav, image_name="notes.png"), 422, "invalid_image",
                         "image")
    assert error["message"] == api_words(lib.value, "image", {str(local): "notes.png"})

    with pytest.raises(InputError) as lib:
        config_from_options({"head-motion": "5"})
    assert lib.value.field == "head_motion"
    error = assert_error(post(client, b"unused", hello_wav, **{"head-motion": "5"}), 422, "invalid_option",
                         "head-motion")
    assert error["message"] == api_words(lib.value, "head-motion")
    assert error["message"].startswith("head-motion must be between 0 and 2, got 5")


@pytest.mark.parametrize("mouth", ["tongue_out", "wide_open_mouth"])
def test_a_mouth_the_warp_cannot_animate_is_refused_at_submit(api, mouth, hello_wav):
    """A portrait the warp engine refuses (a tongue out over the lip, a mouth too wide open to close) is
    refused when submitted (422, no job), with the message the engine itself gives."""
    import cv2

    from benchmarks import robustness as corpus
    from talkinghead.config import AnimateConfig, RenderConfig
    from talkinghead.systems.warp.engine import Animator
    from talkinghead.types import Portrait

    client, app = api
    image = next(c for c in corpus.cases() if c.name == mouth).build()
    with pytest.raises(InputError) as lib:
        Animator(Portrait(image), AnimateConfig(render=RenderConfig(size=128)), warn=False)
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    error = assert_error(post(client, png, hello_wav, **SMALL), 422, "invalid_image", "image")
    assert error["message"] == api_words(lib.value, "image")
    assert ("tongue" if mouth == "tongue_out" else "wide open") in error["message"]
    assert leftovers(app) == [] and client.get("/v1/health").json()["jobs"] == 0


def test_audio_longer_than_the_limit(portrait_png, make_wav, tmp_path):
    """Speech over the server's limit, or the client's own max-seconds, is refused (422) as audio_too_long."""
    three_seconds = make_wav(0.1 * np.sin(np.linspace(0, 3000, 3 * 16000)).astype(np.float32))
    with running(max_audio_seconds=2) as (client, app):
        error = assert_error(post(client, portrait_png, three_seconds), 422, "audio_too_long", "audio")
        assert "limit of 2 s" in error["message"]
        local = tmp_path / "speech.wav"  # with the client's own smaller max-seconds: the library's words
        local.write_bytes(three_seconds)
        with pytest.raises(TooLongError) as lib:
            load_audio(local, max_seconds=1)
        error = assert_error(post(client, portrait_png, three_seconds, **{"max-seconds": "1"}), 422, "audio_too_long")
        field = (lib.value.field or "").replace("_", "-")
        assert error["message"] == api_words(lib.value, field, {str(local): "speech.wav"})
        assert error.get("field") == (field or "audio")
        long_text = "This sentence is far too long to be spoken in two seconds by anyone at all."
        assert_error(post(client, portrait_png, text=long_text), 422, "audio_too_long", "text")
        assert leftovers(app) == []


def test_upload_too_large_is_refused_from_its_length(portrait_png):
    """A Content-Length over the limit is refused (413) before the body is read."""
    with running(max_upload_mb=0.1) as (client, app):
        r = post(client, portrait_png, text="hello")  # 465 kB > 100 kB
        error = assert_error(r, 413, "upload_too_large")
        assert "0.1 MB" in error["message"]
        assert leftovers(app) == []


def test_upload_limit_is_checked_while_the_body_streams_in():
    """A chunked body with no Content-Length: the server stops reading just past the limit."""
    app = create_app(Settings(workers=1, max_upload_mb=0.25))
    limit, chunk = app.state.settings.max_upload_bytes, 64 * 1024
    head = b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="huge.png"\r\n\r\n'
    sent, messages = 0, []

    async def receive():
        """An endless chunked upload."""
        nonlocal sent
        body = head if sent == 0 else b"\x89" * chunk  # an endless upload
        sent += len(body)
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message):
        """Collect what the app sends."""
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/videos", "raw_path": b"/v1/videos", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    try:
        asyncio.run(app(scope, receive, send))
        assert messages[0]["status"] == 413
        assert limit < sent <= limit + chunk + len(head)  # read no further than one chunk past the limit
        assert leftovers(app) == []
    finally:
        app.state.service.close()


def test_malformed_bodies(api):
    """Not a form: 415; a broken or empty form: 400."""
    client, _ = api
    assert_error(client.post("/v1/videos", json={"image": "x"}), 415, "unsupported_media_type")
    form = {"content-type": "multipart/form-data; boundary=abc"}
    r = client.post("/v1/videos", content=b"--abc\r\nnonsense", headers=form)
    assert_error(r, 400, "bad_request")
    r = client.post("/v1/videos", content=b"", headers={"content-type": "multipart/form-data"})
    assert_error(r, 400, "bad_request")


def test_unknown_jobs_are_404_everywhere(api):
    """Unknown ids and routes: 404; a wrong method: 405; all in the one error body."""
    client, _ = api
    for method, path in (("GET", "/v1/videos/nope"), ("GET", "/v1/videos/nope/file"), ("DELETE", "/v1/videos/nope"),
                         ("GET", "/v1/videos/..%2F..%2Fetc%2Fpasswd")):
        assert_error(client.request(method, path), 404, "not_found")
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.put("/v1/videos"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------------ queue, cancel
def test_queue_full_409_cancel_and_remove(portrait_png, make_wav, wait_status):
    """One render thread, one queue place: a long job runs, a second waits, a third is refused (429).
    Cancelling the waiting one is immediate; the running one stops between frames; both are then removed."""
    speech = load_audio(speech_path("librivox_0870")[0])
    minute = make_wav(np.tile(speech.samples, 9)[:60 * 16000])  # 3600 frames at 60 fps: many seconds of work
    with running(queue_size=1) as (client, app):
        long_job = post(client, portrait_png, minute, size="512", fps="60").json()["id"]
        wait_status(client, long_job, states=("running",))
        assert_error(client.get(f"/v1/videos/{long_job}/file"), 409, "not_ready")
        waiting = post(client, portrait_png, text="wait for me", **SMALL)
        assert waiting.status_code == 202, waiting.text
        waiting = waiting.json()["id"]
        error = assert_error(post(client, portrait_png, text="one too many", **SMALL), 429, "queue_full")
        assert "how to fix:" in error["message"]

        r = client.delete(f"/v1/videos/{waiting}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = client.delete(f"/v1/videos/{long_job}")
        assert r.status_code == 202 and r.json()["status"] == "running"
        stopped = wait_status(client, long_job, timeout=10)
        assert stopped["status"] == "cancelled" and stopped["progress"] < 1.0
        assert_error(client.get(f"/v1/videos/{long_job}/file"), 409, "not_ready")
        assert leftovers(app) == []  # cancelled jobs keep no files
        assert client.delete(f"/v1/videos/{long_job}").status_code == 204
        assert client.delete(f"/v1/videos/{waiting}").status_code == 204
        assert_error(client.get(f"/v1/videos/{long_job}"), 404, "not_found")
        assert client.get("/v1/health").json()["jobs"] == 0


def test_too_many_stored_jobs(portrait_png, hello_wav, wait_status):
    """Past max_jobs kept: 429 until one is deleted."""
    with running(max_jobs=1) as (client, _):
        first = post(client, portrait_png, hello_wav, size="64").json()["id"]
        wait_status(client, first)
        assert_error(post(client, portrait_png, hello_wav, size="64"), 429, "too_many_jobs")
        assert client.delete(f"/v1/videos/{first}").status_code == 204
        assert post(client, portrait_png, hello_wav, size="64").status_code == 202


def test_finished_jobs_expire_with_their_files(portrait_png, hello_wav, wait_status):
    """The reaper forgets a finished job after the TTL and deletes its files."""
    import time

    with running(ttl_seconds=0.3) as (client, app):
        job_id = post(client, portrait_png, hello_wav, size="64").json()["id"]
        end = time.monotonic() + 10
        while client.get(f"/v1/videos/{job_id}").status_code == 200:
            assert time.monotonic() < end, "the job never expired"
            time.sleep(0.05)
        assert_error(client.get(f"/v1/videos/{job_id}/file"), 404, "not_found")
        assert leftovers(app) == []


# ------------------------------------------------------------------------------------------ auth, lifecycle
def test_every_route_needs_the_token_when_one_is_set(portrait_png, hello_wav, wait_status):
    """With a token: 401 without it (or with a wrong one) on every route and the websocket."""
    good = {"Authorization": "Bearer s3cret-token"}
    with running(token="s3cret-token") as (client, _):
        routes = [("POST", "/v1/videos"), ("GET", "/v1/videos/x"), ("GET", "/v1/videos/x/file"),
                  ("DELETE", "/v1/videos/x"), ("GET", "/v1/health")]
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
                r = client.request(method, path, headers=headers)
                assert_error(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == "Bearer"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/v1/stream"):
                pass
        assert denied.value.status_code == 401 and denied.value.json()["error"]["code"] == "unauthorized"

        r = client.post("/v1/videos", files={"image": ("f.png", portrait_png), "audio": ("s.wav", hello_wav)},
                        data={"size": "64"}, headers=good)
        assert r.status_code == 202
        assert wait_status(client, r.json()["id"], headers=good)["status"] == "done"
        assert client.get(f"/v1/videos/{r.json()['id']}/file", headers=good).status_code == 200
        assert client.delete(f"/v1/videos/{r.json()['id']}", headers=good).status_code == 204
        assert client.get("/openapi.json").status_code == 200  # the API description itself is public


def test_shutdown_stops_the_threads_and_deletes_the_temp_folder(portrait_png, hello_wav, wait_status):
    """Leaving the app's lifespan stops its threads and deletes its temp folder."""
    before = set(threading.enumerate())
    with running(workers=2) as (client, app):
        root = app.state.service.root
        job_id = post(client, portrait_png, hello_wav, size="64").json()["id"]
        wait_status(client, job_id)
        assert root.is_dir() and any(root.iterdir())
        threads = [t for t in set(threading.enumerate()) - before if t.name.startswith("talkinghead-")]
        assert {t.name for t in threads} >= {"talkinghead-render-0", "talkinghead-render-1", "talkinghead-reaper"}
    assert not root.exists()
    assert not any(t.is_alive() for t in threads)


def test_settings_are_checked(monkeypatch):
    """Impossible settings are refused with a CLI-style message; the token may come from the environment."""
    for bad in ({"workers": 0}, {"queue_size": 1.5}, {"port": 70000}, {"max_upload_mb": -1}, {"token": " "},
                {"checkpoint_dir": "/no/such/folder"}, {"ttl_seconds": float("nan")}):
        with pytest.raises(InputError, match="how to fix"):
            Settings(**bad).validate()
    with pytest.raises(InputError, match="unknown server setting"):
        serve(colour="blue")
    with pytest.raises(InputError, match="workers must be a whole number > 0") as bad:
        serve(workers=0)  # refused before anything listens
    assert bad.value.field == "workers"  # the CLI names it as its flag, --workers
    assert Settings().host == "127.0.0.1" and Settings().workers >= 1  # loopback unless the operator says
    with socket.socket() as busy:  # a port in use is one clear message, not uvicorn's exit
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            serve(port=busy.getsockname()[1])
    monkeypatch.setenv("TALKINGHEAD_TOKEN", "from-env")
    assert make_settings(port=None).token == "from-env"  # None: the default, as a CLI passes it
    assert make_settings(token="given").token == "given"
    monkeypatch.delenv("TALKINGHEAD_TOKEN")
    assert make_settings().token is None


def test_the_cli_names_a_bad_setting_by_its_flag():
    """A setting's error carries its field; `talkinghead serve` words it as the flag, exit code 2."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "talkinghead", "serve", "--max-jobs", "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--max-jobs must be a whole number > 0, got 0" in done.stderr and "Traceback" not in done.stderr
