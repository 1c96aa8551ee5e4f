"""Render jobs behind `talkinghead serve`: a bounded queue, a fixed pool of render threads, and a reaper
that expires finished jobs. Every file lives in one private temp folder, under names the server makes."""
from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from ...service import Cancelled
from ...types import Speech
from .errors import ServiceError, api_name, words
from .validation import DubRequest, RenderRequest

log = logging.getLogger("talkinghead.serve")

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
VIDEO_NAME = "video.mp4"
REAP_EVERY_MAX = 30.0  # s, the reaper looks at least this often (more often for short TTLs)
JOIN_SECONDS = 10.0  # s, how long close() waits for a render thread to stop


@dataclass(eq=False)
class Job:
    """One render: its state as clients see it and its private folder."""

    id: str
    folder: Path
    request: RenderRequest | DubRequest | None = None
    status: str = "queued"
    progress: float = 0.0
    error: str | None = None  # why a failed job failed, in the API's words
    error_code: str | None = None  # the failing InputError's code (no_face, unreadable_media, ...) or "internal"
    error_field: str | None = None  # the input or control it was about, as the API names it
    finished_at: float | None = None  # time.monotonic() when it reached a FINISHED state
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def video(self) -> Path:
        """Where the finished mp4 is (or will be)."""
        return self.folder / VIDEO_NAME

    def public(self) -> dict:
        """The JSON clients get from GET /v1/videos/{id}; a failed job adds the code and field of its error."""
        out = {"id": self.id, "status": self.status, "progress": round(self.progress, 4), "error": self.error}
        if self.status == "failed":
            out.update(error_code=self.error_code, error_field=self.error_field)
        return out


class JobService:
    """Queue + render threads + reaper. Thread-safe; `close()` stops everything and deletes every file.

    Capacity: at most `queue_size` jobs wait (uploads being received count, so a refused client is told
    before it sends its files), and at most `max_jobs` are kept in any state (finished ones until they are
    deleted or expire `ttl_seconds` after finishing).
    """

    def __init__(self, workers: int, queue_size: int, max_jobs: int, ttl_seconds: float):
        self.workers = workers
        self.queue_size = queue_size
        self.max_jobs = max_jobs
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._receiving: set[str] = set()  # ids of uploads reserved but not yet queued
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._started = False
        self.root = self._new_root()

    def _new_root(self) -> Path:
        """A fresh private temp folder, deleted at exit even if close() never runs."""
        root = Path(tempfile.mkdtemp(prefix="talkinghead-serve-"))  # mode 0700: private to this user
        weakref.finalize(self, shutil.rmtree, str(root), True)  # removed even if close() never runs
        return root

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the render threads and the reaper (idempotent; a closed service stays closed)."""
        with self._lock:
            if self._started or self._closing.is_set():
                return
            self._started = True
            for i in range(self.workers):
                self._threads.append(threading.Thread(target=self._work, name=f"talkinghead-render-{i}", daemon=True))
            self._threads.append(threading.Thread(target=self._reap, name="talkinghead-reaper", daemon=True))
        for t in self._threads:
            t.start()

    def reopen(self) -> None:
        """Start, or start again after close() with a fresh temp folder (an app's lifespan may run twice)."""
        with self._lock:
            if self._closing.is_set():
                self.root = self._new_root()
                self._jobs, self._receiving, self._threads = {}, set(), []
                self._pending.clear()
                self._started = False
                self._closing.clear()
        self.start()

    def close(self) -> None:
        """Cancel every job, stop the threads and delete the temp folder (idempotent)."""
        with self._lock:
            self._closing.set()
            for job in self._jobs.values():
                job.cancel.set()
            self._pending.clear()
            self._lock.notify_all()
        for t in self._threads:
            t.join(JOIN_SECONDS)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def closing(self) -> bool:
        """Whether close() was called (and no reopen since)."""
        return self._closing.is_set()

    # ----------------------------------------------------------------------------------- submitting
    def reserve(self) -> Job:
        """A new job and its empty folder for an upload, or ServiceError 429 when the queue is full."""
        self.start()
        with self._lock:
            if self._closing.is_set():
                raise ServiceError("shutting_down", "the server is shutting down\n  how to fix: try again later")
            if len(self._pending) + len(self._receiving) >= self.queue_size:
                raise ServiceError("queue_full", f"the render queue is full ({self.queue_size} jobs waiting)\n"
                                   "  how to fix: try again in a few seconds", headers={"Retry-After": "2"})
            if len(self._jobs) + len(self._receiving) >= self.max_jobs:
                raise ServiceError("too_many_jobs", f"the server already keeps {self.max_jobs} jobs\n"
                                   "  how to fix: DELETE finished videos you have downloaded, "
                                   "or wait for them to expire")
            job_id = secrets.token_hex(16)
            folder = self.root / job_id
            folder.mkdir(mode=0o700)
            self._receiving.add(job_id)
        return Job(job_id, folder)

    def release(self, job: Job) -> None:
        """Give back a reservation whose upload failed or was refused; its files go."""
        with self._lock:
            self._receiving.discard(job.id)
        shutil.rmtree(job.folder, ignore_errors=True)

    def submit(self, job: Job, request: RenderRequest) -> None:
        """Queue a reserved job (its place was counted when it was reserved, so this never fails)."""
        with self._lock:
            if job.id not in self._receiving:  # the service was closed (and maybe reopened) meanwhile
                shutil.rmtree(job.folder, ignore_errors=True)
                raise ServiceError("shutting_down", "the server is shutting down\n  how to fix: try again later")
            self._receiving.discard(job.id)
            if self._closing.is_set():
                shutil.rmtree(job.folder, ignore_errors=True)
                raise ServiceError("shutting_down", "the server is shutting down\n  how to fix: try again later")
            job.request = request
            self._jobs[job.id] = job
            self._pending.append(job)
            self._lock.notify()

    # ----------------------------------------------------------------------------------- clients
    def get(self, job_id: str) -> Job:
        """The job, or ServiceError 404."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ServiceError("not_found", f"no video job {job_id!r}\n  how to fix: use the id POST /v1/videos "
                               "returned; finished jobs expire after a while")
        return job

    def open_video(self, job_id: str):
        """(open binary file, size) of a finished job's mp4; 404 unknown, 409 not done yet."""
        with self._lock:  # open under the lock: a DELETE or the reaper cannot pull the file away meanwhile
            job = self.get(job_id)
            if job.status != "done":
                raise ServiceError("not_ready", f"video {job_id} is {job.status}, not done\n"
                                   f"  how to fix: poll GET /v1/videos/{job_id} until its status is done")
            f = open(job.video, "rb")  # noqa: SIM115 - closed by the response that streams it
        return f, job.video.stat().st_size

    def delete(self, job_id: str) -> tuple[str, Job]:
        """Cancel a queued job ("cancelled"), ask a running one to stop ("cancelling"), or forget a
        finished one and delete its files ("removed")."""
        with self._lock:
            job = self.get(job_id)
            if job.status == "queued":
                self._pending.remove(job)
                job.cancel.set()
                self._finish(job, "cancelled")
                outcome = "cancelled"
            elif job.status == "running":
                job.cancel.set()
                outcome = "cancelling"
            else:
                del self._jobs[job_id]
                outcome = "removed"
        if outcome != "cancelling":
            shutil.rmtree(job.folder, ignore_errors=True)
        return outcome, job

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._lock:
            out = dict.fromkeys(STATES, 0)
            for job in self._jobs.values():
                out[job.status] += 1
        return out

    # ----------------------------------------------------------------------------------- workers
    def _next(self) -> Job | None:
        """Block until a job is queued (None when closing); mark it running."""
        with self._lock:
            while not self._pending and not self._closing.is_set():
                self._lock.wait()
            if self._closing.is_set():
                return None
            job = self._pending.popleft()
            job.status = "running"
            return job

    def _work(self) -> None:
        """A render thread: take the next job, render it, record how it ended; never dies on a bad job."""
        while (job := self._next()) is not None:
            status, failure = "done", None
            try:
                render_job(job)
            except Cancelled:
                status = "cancelled"
            except InputError as e:  # found only while rendering (a dubbed video with no face, say)
                status = "failed"
                failure = (words(e, job.request.labels), e.code, api_name(e.field) if e.field else None)
            except Exception:  # noqa: BLE001 - a bug must fail the job, not the server
                log.exception("job %s failed", job.id)
                status = "failed"
                failure = ("internal error while rendering (the server log has the details)", "internal", None)
            self._remove_files(job, keep_video=status == "done")  # before clients can see the outcome
            with self._lock:
                self._finish(job, status, failure)

    def _finish(self, job: Job, status: str, failure: tuple[str, str, str | None] | None = None) -> None:
        """Record how a job ended, with (message, code, field) when it failed (call with the lock held)."""
        job.status, job.finished_at = status, time.monotonic()
        if failure is not None:
            job.error, job.error_code, job.error_field = failure
        if status == "done":
            job.progress = 1.0
        job.request = None  # inputs are no longer needed

    @staticmethod
    def _remove_files(job: Job, keep_video: bool) -> None:
        """Delete a job's inputs (and its video unless kept); the folder goes when nothing is kept."""
        if not keep_video:
            shutil.rmtree(job.folder, ignore_errors=True)
            return
        try:
            for p in job.folder.iterdir():
                if p.name != VIDEO_NAME:
                    p.unlink(missing_ok=True)
        except FileNotFoundError:  # the service closed meanwhile
            pass

    def _reap(self) -> None:
        """Forget finished jobs `ttl_seconds` after they finished, and delete their files."""
        every = min(REAP_EVERY_MAX, max(0.05, self.ttl_seconds / 4))
        while not self._closing.wait(every):
            now = time.monotonic()
            with self._lock:
                expired = [j for j in self._jobs.values()
                           if j.finished_at is not None and now - j.finished_at >= self.ttl_seconds]
                for job in expired:
                    del self._jobs[job.id]
            for job in expired:
                shutil.rmtree(job.folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------- rendering
def load_speech(request: RenderRequest, max_seconds: float) -> Speech:
    """The job's speech: its decoded audio (aligned with `text` when given), or `text` spoken by espeak-ng."""
    from ...service import load_speech as read, spoken, with_transcript

    if request.audio is None:
        return spoken(request.text, request.voice, max_seconds)
    return with_transcript(read(request.audio, max_seconds), request.text)


def render_job(job: Job) -> None:
    """Render a job's video into its folder (atomically), updating `progress`; stops between frames
    when the job's cancel flag is set (raising Cancelled, leaving no video)."""
    from ...service import render

    request = job.request
    if isinstance(request, DubRequest):
        from ...dub import dub

        dub(request.video, request.audio, job.video, text=request.text, options=request.options, cancel=job.cancel,
            on_progress=lambda fraction: setattr(job, "progress", fraction))
        return
    speech = load_speech(request, request.config.render.max_seconds)
    render(request.engine, request.image, speech, job.video, request.config, cancel=job.cancel,
           on_progress=lambda fraction: setattr(job, "progress", fraction), warn=False)
