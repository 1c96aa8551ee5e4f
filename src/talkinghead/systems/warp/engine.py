"""The `warp` engine: portrait + speech -> frames, on a CPU, streaming.

face.prepare (once) -> MotionGenerator (audio chunks -> MotionFrames, causal + fixed lookahead)
-> WarpRenderer (MotionFrame -> RGB frame). Batch rendering is the stream fed the whole file.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np

from ...audio.features import n_frames
from ...config import AnimateConfig
from ...face import prepare
from ...face.mouth_state import refuse_tongue_out
from ...face.occlusion import warm_lab_tables
from ...motion import MotionGenerator
from ...render import WarpRenderer
from ...types import SAMPLE_RATE, MotionFrame, PhoneSegment, Portrait, Speech

RENDER_WORKERS = 2  # threads rendering a whole file's frames at once (OpenCV and numpy release the GIL)


class Animator:
    """Animates one portrait. Build once (face analysis, mesh), then `stream` or `frames` any
    number of times; each call starts a fresh, seeded motion track."""

    name = "warp"

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        self.config = (config or AnimateConfig()).validate()
        r = self.config.render
        warm_lab_tables()  # on the idle core while the face analysis below keeps this one busy
        self.portrait, self.face = prepare(portrait, r.size, r.crop, r.face_index, warn=warn)
        self.renderer = WarpRenderer(self.portrait, self.face, own_teeth=r.teeth)
        # a tongue out over the lower lip cannot be closed behind the lips like an open mouth can; judged on
        # the source photo, whose mouth has more pixels than a small output's
        refuse_tongue_out(portrait.image, self.face.source_landmarks)

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return self.portrait.size

    def motion(self, phones: list[PhoneSegment] | None = None) -> MotionGenerator:
        return MotionGenerator(self.config.motion, self.fps, phones)

    def stream(self, audio_chunks: Iterable[np.ndarray], phones: list[PhoneSegment] | None = None,
               workers: int = 1) -> Iterator[np.ndarray]:
        """Yield (h, w, 3) uint8 frames as 16 kHz mono float32 chunks arrive. A frame is yielded as
        soon as the audio up to its time + the lookahead is in; the rest when the chunks end.
        `workers` > 1 renders that many frames at once in threads (in order, the same frames): the
        motion track stays one sequential pass, rendering is most of the work."""
        gen = self.motion(phones)

        def motion() -> Iterator[MotionFrame]:
            for chunk in audio_chunks:
                yield from gen.push(chunk)
            yield from gen.finish()

        if workers <= 1:
            for m in motion():
                yield self.render(m)
        else:
            with _opencv_serial():
                yield from _in_order(self.render, motion(), workers)

    def frames(self, speech: Speech, chunk_seconds: float = 1.0) -> Iterator[np.ndarray]:
        """All frames of a clip (the stream fed the whole file, chunked to keep memory flat),
        rendered by RENDER_WORKERS threads: rendering a whole file is throughput work, and with the
        encoder running beside it one rendering thread alone is the slowest stage."""
        step = max(1, int(chunk_seconds * SAMPLE_RATE))
        chunks = (speech.samples[i:i + step] for i in range(0, len(speech.samples), step))
        return self.stream(chunks, speech.phones, workers=RENDER_WORKERS)

    def render(self, m: MotionFrame) -> np.ndarray:
        return self.renderer.render(m)

    def n_frames(self, speech: Speech) -> int:
        return n_frames(speech.duration, self.fps)


_opencv_lock = threading.Lock()
_opencv_users = 0  # renders running inside _opencv_serial
_opencv_threads = 0  # OpenCV's thread count before the first of them


@contextmanager
def _opencv_serial():
    """OpenCV's own thread pool off while frames are rendered by several threads at once: every
    core already has a frame (or the encoder) to work on, and the pool's workers spin-wait between
    the small calls of a frame, which costs CPU time the other threads need (60 s of speech at
    512 px: ~0.5 core-s less in all). The setting is process-wide; the last render to finish
    puts back what was there before the first."""
    global _opencv_users, _opencv_threads
    with _opencv_lock:
        if _opencv_users == 0:
            _opencv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _opencv_users += 1
    try:
        yield
    finally:
        with _opencv_lock:
            _opencv_users -= 1
            if _opencv_users == 0:
                cv2.setNumThreads(_opencv_threads)


def _in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """fn(item) for each item, computed by `workers` threads a few items ahead, yielded in order."""
    with ThreadPoolExecutor(workers, thread_name_prefix="talkinghead-render") as pool:
        pending: deque = deque()
        try:
            for x in items:
                pending.append(pool.submit(fn, x))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
