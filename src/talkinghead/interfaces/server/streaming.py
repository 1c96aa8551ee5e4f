"""WS /v1/stream: live frames as audio arrives. A session reads the portrait and controls, then audio; a render
thread runs the warp engine over the audio feed and sends each frame as a JPEG as soon as it is made."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from ...errors import InputError
from ...types import SAMPLE_RATE
from ..settings import Settings
from .audiofeed import AudioFeed, FeedClosed, StreamSlots
from .auth import token_ok, unauthorized
from .errors import STREAM_CODES, ServiceError, error_body, error_response, refusal
from .validation import client_config

log = logging.getLogger("talkinghead.serve")

HELLO_SECONDS = 30.0  # s, a stream's first message (the portrait) must arrive within this
STREAM_IDLE_SECONDS = 30.0  # s without any message ends a stream
STREAM_AHEAD_SECONDS = 1.0  # s of audio buffered ahead of rendering, at most
STREAM_PIECE = SAMPLE_RATE // 10  # samples handed to the renderer at once (100 ms)
HALT_SECONDS = 5.0  # s, how long a stopped stream waits for its render thread before closing anyway
JPEG_QUALITY = 85


def encode_jpeg(frame: np.ndarray) -> bytes:
    """RGB uint8 frame -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def stream_animator(image: bytes, options: dict, settings: Settings, scratch: Path):
    """A warp Animator for a stream's portrait (bytes) and controls; ServiceError 422 when either is bad."""
    from ...io import load_image
    from ...systems.warp.engine import Animator

    options = dict(options)
    engine = str(options.pop("engine", "warp"))
    if engine != "warp":
        raise ServiceError("invalid_option", f"streaming uses the warp engine, not {engine!r}\n"
                           "  how to fix: leave `engine` out", field="engine")
    config = client_config(options, settings, "warp")
    path = scratch / f"stream-{secrets.token_hex(8)}.image"
    try:
        with open(path, "xb") as f:
            f.write(image)
        portrait = load_image(path)
        return Animator(portrait, config, warn=False)
    except InputError as e:
        raise refusal(e, "image", {str(path): "the image"}) from None
    finally:
        path.unlink(missing_ok=True)


_TIMEOUT = object()


class StreamSession:
    """One /v1/stream connection: reads the portrait, then audio; a thread renders and sends frames."""

    def __init__(self, ws: WebSocket, settings: Settings, slots: StreamSlots, scratch: Path):
        self.ws = ws
        self.settings = settings
        self.slots = slots
        self.scratch = scratch
        self.loop = asyncio.get_running_loop()
        self.feed = AudioFeed(int(STREAM_AHEAD_SECONDS * SAMPLE_RATE))
        self.stop = threading.Event()
        self.done = asyncio.Event()
        self.thread: threading.Thread | None = None
        self.frames = 0
        self.failed = False

    def halt(self) -> None:
        """Stop rendering now (thread-safe): the render thread ends at its next frame or audio wait."""
        self.stop.set()
        self.feed.close()

    async def run(self) -> None:
        """The whole session; returns when the stream is over (the caller frees the slot)."""
        started = time.monotonic()
        hello = await self._receive(HELLO_SECONDS)
        if hello is None:
            return
        if hello is _TIMEOUT:
            return await self._fail("idle", f"no portrait within {HELLO_SECONDS:g} s\n"
                                    "  how to fix: send the image as the first message")
        try:
            image, options = self._parse_hello(hello)
            animator = await run_in_threadpool(stream_animator, image, options, self.settings, self.scratch)
        except ServiceError as e:
            return await self._fail(e.code, e.message, e.field, close=1009 if e.status == 413 else 1007)
        w, h = animator.frame_size
        await self.ws.send_json({"fps": animator.fps, "width": w, "height": h, "sample_rate": SAMPLE_RATE,
                                 "audio": "pcm_s16le", "video": "jpeg",
                                 "max_seconds": self.settings.max_stream_seconds})
        self.thread = threading.Thread(target=self._render, args=(animator,), daemon=True,
                                       name=f"talkinghead-stream-{id(self):x}")
        self.thread.start()
        outcome = await self._read_audio(started)
        if outcome == "gone":
            return
        if outcome == "end":  # the tail frames go out first (within the session's time)
            remaining = started + self.settings.max_stream_seconds - time.monotonic()
            if not await self._finished(max(remaining, 0.0)):
                outcome = "time_limit"
            elif self.failed:
                outcome = "failed"
            else:
                await self.ws.send_json({"end": True, "frames": self.frames})
                return await self.ws.close(1000)
        self.halt()
        await self._finished(HALT_SECONDS)
        code, message = {
            "time_limit": ("stream_too_long", f"the stream reached this server's limit of "
                           f"{self.settings.max_stream_seconds:g} s\n  how to fix: start a new stream"),
            "idle": ("idle", f"no message for {STREAM_IDLE_SECONDS:g} s\n"
                     "  how to fix: keep sending audio (silence is fine), or send {\"end\": true}"),
            "failed": ("internal", "rendering failed (the server log has the details)"),
        }.get(outcome, ("unexpected_message", "expected binary audio (16 kHz mono int16 LE) or {\"end\": true}\n"
                                              "  how to fix: see the protocol in the API description"))
        await self._fail(code, message)

    async def _finished(self, timeout: float) -> bool:
        """Wait for the render thread to end; False if it is still going after `timeout` s."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _parse_hello(self, msg: dict) -> tuple[bytes, dict]:
        """The portrait's bytes and the controls from the first message (ServiceError when it is not one)."""
        limit = self.settings.max_upload_bytes
        if msg.get("bytes") is not None:
            image, options = msg["bytes"], {}
        else:
            try:
                options = json.loads(msg.get("text") or "")
            except ValueError:
                options = None
            if not isinstance(options, dict) or not isinstance(options.get("image"), str):
                raise ServiceError("invalid_image", "the first message must be the image: binary, or JSON "
                                   "{\"image\": \"<base64>\", ...controls}\n  how to fix: see the stream protocol",
                                   field="image")
            data = options.pop("image")
            if len(data) > limit * 4 // 3 + 4:
                raise ServiceError("upload_too_large", f"the image is larger than {limit / 2**20:.3g} MB\n"
                                   "  how to fix: send a smaller image", field="image")
            try:
                image = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ServiceError("invalid_image", "`image` is not valid base64\n"
                                   "  how to fix: base64-encode the image file's bytes", field="image") from None
        if len(image) > limit:
            raise ServiceError("upload_too_large", f"the image is larger than {limit / 2**20:.3g} MB\n"
                               "  how to fix: send a smaller image", field="image")
        return image, options

    async def _receive(self, timeout: float):
        """The next message; None when the client left; _TIMEOUT after `timeout` s."""
        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError:
            return _TIMEOUT
        return None if msg["type"] == "websocket.disconnect" else msg

    async def _read_audio(self, started: float) -> str:
        """Feed audio to the render thread until the client ends (or leaves, or a limit is hit)."""
        max_samples = int(self.settings.max_stream_seconds * SAMPLE_RATE)
        deadline = started + self.settings.max_stream_seconds
        carry, total = b"", 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "time_limit"
            msg = await self._receive(min(remaining, STREAM_IDLE_SECONDS))
            if msg is None:
                return "gone"
            if msg is _TIMEOUT:
                return "idle" if remaining > STREAM_IDLE_SECONDS else "time_limit"
            if msg.get("bytes") is not None:
                data = carry + msg["bytes"]
                cut = len(data) - len(data) % 2
                carry = data[cut:]
                samples = np.frombuffer(data[:cut], "<i2").astype(np.float32) / 32768.0
                total += len(samples)
                if total > max_samples:
                    return "time_limit"
                for i in range(0, len(samples), STREAM_PIECE):
                    piece = samples[i:i + STREAM_PIECE]
                    while not self.feed.room(len(piece)):  # back-pressure: stop reading until rendering catches up
                        if self.stop.is_set():
                            return "failed" if self.failed else "gone"
                        await asyncio.sleep(0.005)
                    if self.stop.is_set():
                        return "failed" if self.failed else "gone"
                    self.feed.put(piece)
            else:
                try:
                    message = json.loads(msg.get("text") or "")
                except ValueError:
                    message = None
                if isinstance(message, dict) and message.get("end") is True:
                    self.feed.end()
                    return "end"
                return "unexpected"

    def _render(self, animator) -> None:
        """Render thread: frames from the audio feed, each sent as a JPEG as soon as it is made."""
        try:
            for frame in animator.stream(self.feed):
                if self.stop.is_set() or not self._send(encode_jpeg(frame)):
                    break
                self.frames += 1
        except FeedClosed:
            pass
        except Exception:  # noqa: BLE001 - reported to the client, logged here
            log.exception("stream rendering failed")
            self.failed = True
        finally:
            self.stop.set()
            self.feed.close()
            self.slots.release(self)
            try:
                self.loop.call_soon_threadsafe(self.done.set)
            except RuntimeError:  # the event loop is gone (server stopped)
                pass

    def _send(self, data: bytes) -> bool:
        """Send one frame from the render thread through the event loop; False when the stream is over."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self.ws.send_bytes(data), self.loop)
        except RuntimeError:
            return False
        while True:
            try:
                fut.result(timeout=0.1)
                return True
            except TimeoutError:
                if self.stop.is_set():
                    fut.cancel()
                    return False
            except Exception:  # noqa: BLE001 - the client went away
                return False

    async def _fail(self, code: str, message: str, field: str | None = None, close: int | None = None) -> None:
        """Send the error body, then close with the code's close code (quietly if the client is already gone)."""
        try:
            await self.ws.send_json(error_body(code, message, field))
            await self.ws.close(close or STREAM_CODES[code][0], reason=code)
        except Exception:  # noqa: BLE001 - the client may already be gone
            pass

    def finish(self) -> None:
        """Free everything: stop the render thread (it frees the slot as it ends), or free the slot here."""
        self.halt()
        if self.thread is None or not self.thread.is_alive():
            self.slots.release(self)


def stream_routes(settings: Settings, slots: StreamSlots, scratch: Path) -> APIRouter:
    """The WebSocket route; the bearer token is checked before the handshake is accepted."""
    router = APIRouter()

    @router.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        """Live frames as audio arrives (protocol in the API description)."""
        if not token_ok(ws.headers.get("authorization"), settings.token):
            e = unauthorized()
            try:
                await ws.send_denial_response(error_response(e.status, e.code, e.message, headers=e.headers))
            except RuntimeError:  # a server without the denial extension: refuse the handshake (403)
                await ws.close(1008, reason="unauthorized")
            return
        session = StreamSession(ws, settings, slots, scratch)
        if not slots.acquire(session):
            await ws.accept()
            await ws.send_json(error_body("too_many_streams", f"this server already runs {settings.max_streams} "
                                          "streams\n  how to fix: try again later"))
            await ws.close(STREAM_CODES["too_many_streams"][0], reason="too_many_streams")
            return
        try:
            await ws.accept()
            await session.run()
        except WebSocketDisconnect:  # the client left while we were sending
            pass
        finally:
            session.finish()

    return router
