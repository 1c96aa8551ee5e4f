"""Per-frame tracking of one face through a video: FaceMesh in tracking mode on a crop around the
face, shot cuts from frame differences, and zero-lag (centred) smoothing within each shot.

Which face: the largest (default), the N-th largest (`face_index`), or the one whose lips move most
over the first frames of the shot (`auto_speaker`). A frame where that face is missing, too small or
turned too far keeps `landmarks=None` and passes through the dubbing unchanged.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..face import regions as R
from ..face.landmarks import MIN_FACE_WIDTH, _quiet_native_stderr, detect_all
from .source import Frame

CUT_THRESHOLD = 28.0  # mean abs difference (0..255) of 64x36 grey thumbnails that marks a shot cut
CROP_SCALE = 1.8  # tracking crop side / face box side
CROP_SIDE = 320  # px, the crop is resized to at most this before FaceMesh
RECENTRE = 0.12  # move the crop when the face centre drifts this share of the crop from its centre
REDETECT_EVERY = 3  # frames between full-frame searches while the face is lost
MAX_YAW = 40.0  # degrees: a head turned further than this is left as it is
SMOOTH_HALF = 2  # frames on each side of the centred smoothing window
SMOOTH_SIGMA = 1.0  # frames
SPEAKER_FRAMES = 25  # frames watched at the start of a shot to find the face whose lips move most
JUMP = 0.5  # face centre jump (face widths) between frames that counts as a new face


@dataclass
class Tracked:
    """A source frame with the tracked face's landmarks (None: pass the frame through)."""

    index: int
    time: float
    image: np.ndarray
    landmarks: np.ndarray | None  # (478, 3) pixels
    shot: int  # increases at every cut (and when the tracked face changes)


def yaw_degrees(pts: np.ndarray) -> float:
    """Head yaw from the nose tip's position between the two cheek outlines (0 = frontal)."""
    left, right = pts[234, 0], pts[454, 0]  # face oval at the ears, image left / right
    nose = pts[R.NOSE_TIP, 0]
    half = max(abs(right - left) / 2, 1e-6)
    x = np.clip((nose - (left + right) / 2) / half, -0.99, 0.99)
    return float(np.degrees(np.arcsin(x)))


def usable(pts: np.ndarray) -> bool:
    return float(np.ptp(pts[:, 0])) >= MIN_FACE_WIDTH and abs(yaw_degrees(pts)) <= MAX_YAW


def _thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)


class _CropTracker:
    """FaceMesh in tracking mode on a square crop that follows one face."""

    def __init__(self):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with _quiet_native_stderr():
            self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                        refine_landmarks=True, min_detection_confidence=0.5,
                                                        min_tracking_confidence=0.5)
        self.lock = threading.Lock()
        self.window: tuple[int, int, int] | None = None  # x0, y0, side in frame pixels

    def place(self, pts: np.ndarray, shape: tuple[int, int]) -> None:
        """Centre the crop on `pts` (unless the face is still well inside the current crop)."""
        h, w = shape
        x0, y0 = pts[:, :2].min(0)
        x1, y1 = pts[:, :2].max(0)
        cx, cy, size = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
        if self.window is not None:
            wx, wy, ws = self.window
            off = max(abs(cx - (wx + ws / 2)), abs(cy - (wy + ws / 2))) / ws
            if off < RECENTRE and 0.85 < CROP_SCALE * size / ws < 1.18:
                return
        side = int(min(CROP_SCALE * size, max(h, w)))
        self.window = (int(round(cx - side / 2)), int(round(cy - side / 2)), side)

    def track(self, image: np.ndarray) -> np.ndarray | None:
        h, w = image.shape[:2]
        wx, wy, ws = self.window
        ax0, ay0, ax1, ay1 = max(wx, 0), max(wy, 0), min(wx + ws, w), min(wy + ws, h)
        if ax1 - ax0 < 32 or ay1 - ay0 < 32:
            return None
        crop = image[ay0:ay1, ax0:ax1]
        s = min(1.0, CROP_SIDE / max(crop.shape[:2]))
        small = crop if s == 1.0 else cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)),
                                                 interpolation=cv2.INTER_AREA)
        with self.lock, _quiet_native_stderr():
            result = self.mesh.process(np.ascontiguousarray(small))
        if not result.multi_face_landmarks:
            return None
        ch, cw = crop.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * cw + ax0, p.y * ch + ay0, p.z * cw) for p in lm], dtype=np.float32)
        return pts

    def close(self) -> None:
        self.mesh.close()


def _centre(p: np.ndarray) -> np.ndarray:
    return p[:, :2].mean(0)


class FaceTracker:
    """Turns decoded frames into `Tracked` frames, in order, a few frames behind the input."""

    def __init__(self, face_index: int | None = None, auto_speaker: bool = False):
        self.face_index = face_index
        self.auto_speaker = auto_speaker
        self.faces_seen = 0  # frames where the face was tracked
        self.cuts = 0

    # -- choosing a face ------------------------------------------------------------------------
    def _choose(self, faces: list[np.ndarray]) -> np.ndarray | None:
        if not faces:
            return None
        if self.face_index is not None:
            return faces[self.face_index] if self.face_index < len(faces) else None
        return faces[0]

    def _speaker(self, frames: list[Frame], faces: list[np.ndarray]) -> int:
        """Index (into `faces`) of the face whose inner lips move most over `frames`."""
        spread = []
        for f0 in faces:
            t = _CropTracker()
            t.place(f0, frames[0].image.shape[:2])
            ap = []
            for fr in frames:
                p = t.track(fr.image)
                if p is not None:
                    ap.append(R.mouth_aperture(p))
                    t.place(p, fr.image.shape[:2])
            t.close()
            spread.append(float(np.std(ap)) if len(ap) > 3 else -1.0)
        return int(np.argmax(spread))

    # -- the raw (unsmoothed) track -------------------------------------------------------------
    def _raw(self, frames: Iterable[Frame]) -> Iterator[Tracked]:
        tracker: _CropTracker | None = None
        shot = 0
        prev_thumb = None
        since_search = REDETECT_EVERY
        last: np.ndarray | None = None
        it = iter(frames)
        pending: deque[Frame] = deque()
        try:
            while True:
                fr = pending.popleft() if pending else next(it, None)
                if fr is None:
                    return
                th = _thumb(fr.image)
                if prev_thumb is not None and float(np.abs(th - prev_thumb).mean()) > CUT_THRESHOLD:
                    shot += 1
                    self.cuts += 1
                    last = None
                    since_search = REDETECT_EVERY
                prev_thumb = th
                pts = None
                if last is not None:
                    tracker.place(last, fr.image.shape[:2])
                    pts = tracker.track(fr.image)
                    if pts is not None and np.linalg.norm(_centre(pts) - _centre(last)) > JUMP * np.ptp(last[:, 0]):
                        pts = None  # the crop caught someone else
                if pts is None and since_search >= REDETECT_EVERY - 1:
                    since_search = 0
                    faces = detect_all(fr.image)
                    if self.auto_speaker and len(faces) > 1:
                        # watch the next frames of this shot to find who is speaking
                        look = [fr]
                        while len(look) < SPEAKER_FRAMES:
                            nxt = next(it, None)
                            if nxt is None:
                                break
                            pending.append(nxt)
                            look.append(nxt)
                        pick = faces[self._speaker(look, faces)]
                    else:
                        pick = self._choose(faces)
                    if pick is not None:
                        if tracker is not None:
                            tracker.close()
                        tracker = _CropTracker()  # a fresh tracking state for a newly found face
                        tracker.place(pick, fr.image.shape[:2])
                        pts = tracker.track(fr.image)
                        if pts is None or np.linalg.norm(_centre(pts) - _centre(pick)) > JUMP * np.ptp(pick[:, 0]):
                            pts = pick
                        if last is None:
                            shot += 1  # a new face track starts: never smooth across it
                elif pts is None:
                    since_search += 1
                last = pts
                if pts is not None and not usable(pts):
                    pts = None
                if pts is not None:
                    self.faces_seen += 1
                yield Tracked(fr.index, fr.time, fr.image, pts, shot)
        finally:
            if tracker is not None:
                tracker.close()

    # -- smoothing ------------------------------------------------------------------------------
    def track(self, frames: Iterable[Frame]) -> Iterator[Tracked]:
        """Tracked frames with landmarks smoothed over a centred window within each shot; a frame
        missing the face between two that have it (same shot) gets interpolated landmarks."""
        k = np.exp(-0.5 * (np.arange(-SMOOTH_HALF, SMOOTH_HALF + 1) / SMOOTH_SIGMA) ** 2)
        buf: list[Tracked] = []  # frames from SMOOTH_HALF before the next to emit, onwards
        nxt = 0  # position in buf of the next frame to emit

        def emit(i: int) -> Tracked:
            c = buf[i]
            near = [(j, t.landmarks, k[j - i + SMOOTH_HALF]) for j, t in enumerate(buf)
                    if abs(j - i) <= SMOOTH_HALF and t.shot == c.shot and t.landmarks is not None]
            if not near:
                return c
            if c.landmarks is None:  # fill a gap only between two tracked frames
                if not (any(j < i for j, _, _ in near) and any(j > i for j, _, _ in near)):
                    return c
            w = np.array([x for _, _, x in near], np.float32)
            sm = np.tensordot(w / w.sum(), np.stack([p for _, p, _ in near]), axes=1).astype(np.float32)
            return Tracked(c.index, c.time, c.image, sm, c.shot)

        for t in self._raw(frames):
            buf.append(t)
            while nxt + SMOOTH_HALF < len(buf):
                yield emit(nxt)
                nxt += 1
            if nxt > SMOOTH_HALF:
                del buf[: nxt - SMOOTH_HALF]
                nxt = SMOOTH_HALF
        while nxt < len(buf):
            yield emit(nxt)
            nxt += 1
