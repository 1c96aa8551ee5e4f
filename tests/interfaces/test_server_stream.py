"""WS /v1/stream with the real warp engine: audio sent in real time (100 ms chunks) comes back as JPEG
frames at the video rate with a short first-frame latency; a client that leaves frees its slot and its
render thread; limits and auth. Runs the app in-process through Starlette's TestClient websocket."""
from __future__ import annotations

import base64
import threading
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from talkinghead.assets import speech_path
from talkinghead.audio.features import n_frames
from talkinghead.config import config_from_options
from talkinghead.errors import InputError
from talkinghead.interfaces.server import AudioFeed, FeedClosed, Settings, create_app
from talkinghead.io import load_audio

CHUNK = 1600  # samples: 100 ms at 16 kHz


@pytest.fixture(scope="module")
def stream_api():
    """One app allowing a single stream, shared by the stream tests."""
    app = create_app(Settings(workers=1, max_streams=1, max_stream_seconds=60))
    with TestClient(app) as client:
        yield client, app


@pytest.fixture(scope="module")
def three_seconds() -> np.ndarray:
    """3 s of real read speech."""
    return load_audio(speech_path("librivox_0880")[0]).samples[:3 * 16000]


def say_hello(ws, image: bytes, **controls) -> dict:
    """Send the portrait (base64 JSON) with controls; return the server's reply."""
    ws.send_json({"image": base64.b64encode(image).decode(), **controls})
    reply = ws.receive_json()
    assert "fps" in reply, reply
    return reply


def stream_threads() -> list[threading.Thread]:
    """Live stream render threads."""
    return [t for t in threading.enumerate() if t.name.startswith("talkinghead-stream")]


def wait_until_free(app, timeout: float = 5.0) -> None:
    """The stream count is back to 0 and no stream thread is alive."""
    end = time.monotonic() + timeout
    while app.state.streams.active or stream_threads():
        assert time.monotonic() < end, (app.state.streams.active, stream_threads())
        time.sleep(0.01)


def expect_close(ws, error_code: str, close_code: int, field: str | None = None) -> str:
    """The server sends the error body (with the field to blame, when given), then closes with `close_code`;
    returns the message."""
    body = ws.receive_json()
    assert set(body) == {"error"} and body["error"]["code"] == error_code, body
    if field is not None:
        assert body["error"]["field"] == field, body
    closing = ws.receive()
    assert closing["type"] == "websocket.close" and closing["code"] == close_code, closing
    return body["error"]["message"]


def test_frames_follow_real_time_audio(stream_api, portrait_png, three_seconds, pcm16):
    """Real-time 100 ms chunks: the first frame comes quickly, then frames at the video rate."""
    client, app = stream_api
    chunks = [pcm16(three_seconds[i:i + CHUNK]) for i in range(0, len(three_seconds), CHUNK)]
    arrivals: list[float] = []
    sent: dict[str, float] = {}
    with client.websocket_connect("/v1/stream") as ws:
        info = say_hello(ws, portrait_png, size=128, **{"head-motion": 0.5})
        assert info == {"fps": 25.0, "width": 128, "height": 128, "sample_rate": 16000, "audio": "pcm_s16le",
                        "video": "jpeg", "max_seconds": 60}

        def send_in_real_time():
            """100 ms chunks at real-time pace, then the end message."""
            start = sent["first"] = time.perf_counter()
            for i, chunk in enumerate(chunks):
                time.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
                ws.send_bytes(chunk)
            sent["last"] = time.perf_counter()
            ws.send_json({"end": True})

        sender = threading.Thread(target=send_in_real_time)
        sender.start()
        while True:
            message = ws.receive()
            if message.get("bytes") is None:
                break
            arrivals.append(time.perf_counter())
            frame = cv2.imdecode(np.frombuffer(message["bytes"], np.uint8), cv2.IMREAD_COLOR)
            assert frame.shape == (128, 128, 3)
        sender.join()
        assert message["type"] == "websocket.send" and '"end":true' in message["text"]
        closing = ws.receive()
        assert closing["type"] == "websocket.close" and closing["code"] == 1000

    expected = n_frames(len(three_seconds) / 16000, 25.0)
    assert len(arrivals) == expected and f'"frames":{expected}' in message["text"]
    first_latency = arrivals[0] - sent["first"]
    live = [t for t in arrivals if t <= sent["last"]]  # frames that came while audio was still being sent
    rate = (len(live) - 1) / (live[-1] - live[0])
    print(f"\nstream: first frame {first_latency * 1000:.0f} ms after the first audio chunk; "
          f"{len(live)}/{expected} frames while sending at {rate:.1f} fps (video {info['fps']:g} fps)")
    assert first_latency < 1.0
    assert len(live) >= 0.8 * expected  # frames come as the audio arrives, not at the end
    assert 0.7 * info["fps"] < rate < 1.3 * info["fps"]
    wait_until_free(app)


def test_a_client_that_leaves_mid_stream_frees_everything(stream_api, portrait_png, three_seconds, pcm16):
    """A client that disconnects mid-stream frees its slot and its render thread."""
    client, app = stream_api
    with client.websocket_connect("/v1/stream") as ws:
        say_hello(ws, portrait_png, size=96)
        for i in range(0, 16000, CHUNK):
            ws.send_bytes(pcm16(three_seconds[i:i + CHUNK]))
        for _ in range(5):
            assert len(ws.receive_bytes()) > 0
        assert app.state.streams.active == 1 and len(stream_threads()) == 1
    wait_until_free(app)  # the socket closed mid-stream
    assert client.get("/v1/health").json()["streams"] == 0
    with client.websocket_connect("/v1/stream") as ws:  # the slot is free again
        assert say_hello(ws, portrait_png, size=96)["width"] == 96
    wait_until_free(app)


def test_too_many_streams_are_refused_with_1013(stream_api, portrait_png):
    """A stream past max_streams gets the error body and close code 1013."""
    client, app = stream_api
    with client.websocket_connect("/v1/stream") as first:
        say_hello(first, portrait_png, size=64)
        with client.websocket_connect("/v1/stream") as second:
            assert "try again later" in expect_close(second, "too_many_streams", 1013)
    wait_until_free(app)


@pytest.mark.parametrize("hello, code, field", [
    ("not json", "invalid_image", "image"),
    ({"image": "%%% not base64 %%%"}, "invalid_image", "image"),
    ({"size": 64}, "invalid_image", "image"),
    (b"GIF89a but not really", "invalid_image", "image"),
    ({"image": "PNG", "head-motion": 9}, "invalid_option", "head-motion"),
    ({"image": "PNG", "engine": "hallo"}, "invalid_option", "engine"),
    ({"image": "PNG", "checkpoint-dir": "/"}, "option_not_allowed", "checkpoint-dir"),
])
def test_a_bad_first_message_is_refused_with_1007(stream_api, portrait_png, hello, code, field):
    """A first message that is not a usable portrait (or has bad controls) closes with 1007, naming the field."""
    client, app = stream_api
    with client.websocket_connect("/v1/stream") as ws:
        if isinstance(hello, bytes):
            ws.send_bytes(hello)
        elif isinstance(hello, str):
            ws.send_text(hello)
        else:
            ws.send_json({k: base64.b64encode(portrait_png).decode() if v == "PNG" else v for k, v in hello.items()})
        message = expect_close(ws, code, 1007, field)
    assert "how to fix:" in message
    if isinstance(hello, dict) and "head-motion" in hello:
        with pytest.raises(InputError) as lib:
            config_from_options({"head-motion": 9})
        assert message == f"head-motion {lib.value.message}\n  how to fix: {lib.value.hint}"
    wait_until_free(app)


def test_an_unexpected_message_ends_the_stream_with_1003(stream_api, portrait_png):
    """Text other than the end message during the audio closes with 1003."""
    client, app = stream_api
    with client.websocket_connect("/v1/stream") as ws:
        say_hello(ws, portrait_png, size=64)
        ws.send_text("what now?")
        expect_close(ws, "unexpected_message", 1003)
    wait_until_free(app)


def test_a_session_ends_at_its_time_limit(portrait_png):
    """A session past max_stream_seconds closes with 1008."""
    app = create_app(Settings(workers=1, max_stream_seconds=0.5))
    with TestClient(app) as client, client.websocket_connect("/v1/stream") as ws:
        say_hello(ws, portrait_png, size=64)
        t0 = time.monotonic()
        assert "limit of 0.5 s" in expect_close(ws, "stream_too_long", 1008)
        assert time.monotonic() - t0 < 5
        wait_until_free(app)


def test_streaming_needs_the_token_when_one_is_set(portrait_png, pcm16, three_seconds):
    """With a token, the handshake is refused (401) without it, and streams with it."""
    app = create_app(Settings(workers=1, token="let-me-in"))
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with client.websocket_connect("/v1/stream", headers=headers):
                    pass
            assert denied.value.status_code == 401 and denied.value.json()["error"]["code"] == "unauthorized"
        with client.websocket_connect("/v1/stream", headers={"Authorization": "Bearer let-me-in"}) as ws:
            assert say_hello(ws, portrait_png, size=64)["fps"] == 25.0
            ws.send_bytes(pcm16(three_seconds[:8000]))
            ws.send_json({"end": True})
            frames = 0
            while (message := ws.receive()).get("bytes") is not None:
                frames += 1
            assert frames == n_frames(0.5, 25.0) and '"end":true' in message["text"]
        wait_until_free(app)


def test_the_audio_feed_holds_at_most_its_limit():
    """The feed between socket and renderer holds at most its limit; end() finishes, close() aborts."""
    feed = AudioFeed(limit=1000)
    assert feed.room(5000)  # an empty feed takes any one piece
    feed.put(np.zeros(600, np.float32))
    assert feed.room(400) and not feed.room(401)
    feed.put(np.zeros(400, np.float32))
    assert feed.pending == 1000 and not feed.room(1)
    taken = []
    consumer = threading.Thread(target=lambda: taken.extend(len(p) for p in feed))
    consumer.start()
    time.sleep(0.05)
    assert feed.pending == 0 and feed.room(1000)  # the renderer took everything; the reader may go on
    feed.end()
    consumer.join(2)
    assert taken == [600, 400] and not consumer.is_alive()

    closed = AudioFeed(limit=1000)
    closed.put(np.zeros(10, np.float32))
    closed.close()
    with pytest.raises(FeedClosed):
        list(closed)
