"""The thread-safe parts of live streaming: the slots that cap concurrent streams, and the bounded audio feed
from the socket to a stream's render thread (back-pressure: the reader waits while it is full)."""
from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

import numpy as np


class Haltable(Protocol):
    """What the slots need of a stream session: a way to stop it."""

    def halt(self) -> None: ...


class StreamSlots:
    """Counts live streams, refuses more than `limit`, and stops them all on shutdown."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0  # live streams
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: set[Haltable] = set()

    def acquire(self, session: Haltable) -> bool:
        """Take a slot for `session`; False when all are taken or the server is stopping."""
        with self._lock:
            if self.stopping.is_set() or self.active >= self.limit:
                return False
            self.active += 1
            self._sessions.add(session)
            return True

    def release(self, session: Haltable) -> None:
        """Give `session`'s slot back (idempotent)."""
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)
                self.active -= 1

    def stop_all(self) -> None:
        """Server shutdown: every render thread stops at its next frame."""
        self.stopping.set()
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.halt()


class FeedClosed(Exception):
    """The stream ended abnormally (disconnect, limit, shutdown): the render thread stops."""


class AudioFeed:
    """Audio pieces from the socket to the render thread, never more than `limit` samples waiting.
    Iterating it (in the render thread) blocks until audio comes, ends after `end()`, raises after `close()`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.pending = 0
        self._pieces: deque[np.ndarray] = deque()
        self._cond = threading.Condition()
        self._state = "open"  # open | ended | closed

    def room(self, n: int) -> bool:
        """Whether `n` more samples fit (an empty feed takes any piece)."""
        return self.pending == 0 or self.pending + n <= self.limit

    def put(self, samples: np.ndarray) -> None:
        """Queue a piece of audio for the renderer (the reader checked `room` first)."""
        with self._cond:
            self._pieces.append(samples)
            self.pending += len(samples)
            self._cond.notify()

    def end(self) -> None:
        """No more audio: the renderer finishes the tail and stops."""
        with self._cond:
            if self._state == "open":
                self._state = "ended"
            self._cond.notify()

    def close(self) -> None:
        """Abort: drop what is queued; the renderer stops with FeedClosed."""
        with self._cond:
            self._state = "closed"
            self._pieces.clear()
            self.pending = 0
            self._cond.notify()

    def __iter__(self):
        """The render thread's audio chunks, as they come."""
        while True:
            with self._cond:
                while not self._pieces and self._state == "open":
                    self._cond.wait()
                if self._state == "closed":
                    raise FeedClosed
                if not self._pieces:
                    return
                piece = self._pieces.popleft()
                self.pending -= len(piece)
            yield piece
