"""Face landmarks: MediaPipe FaceMesh (478 points with irises) on the portrait, once."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

import cv2
import numpy as np

from ..errors import InputError, NoFaceError
from ..types import FaceAnalysis, Portrait

N_LANDMARKS = 478
MIN_FACE_WIDTH = 48  # px, in the image as given: smaller faces have too little detail to animate
DETECT_MAX_SIDE = 1280  # px, detection runs on a copy no larger than this

_lock = threading.Lock()
_mesh = None


@contextlib.contextmanager
def _quiet_native_stderr():
    """MediaPipe's C++ side (absl/TFLite) prints notes straight to fd 2 on start-up and first use,
    which no Python setting silences. Point fd 2 at /dev/null meanwhile."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to protect
        yield
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _face_mesh():
    """One static-image FaceMesh per process; MediaPipe graphs are not thread safe, hence the lock."""
    global _mesh
    if _mesh is None:
        # MediaPipe's C++ logging (glog/absl) would print internal notes on every run
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from ..utils import deferred_imports

        with deferred_imports("matplotlib.pyplot", "sounddevice"):  # used only by helpers we never call
            import mediapipe as mp

        _mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=8, refine_landmarks=True, min_detection_confidence=0.5
        )
    return _mesh


def _detect(image: np.ndarray) -> list[np.ndarray]:
    """FaceMesh on one RGB image (downscaled for speed), landmarks in pixels of `image`."""
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    with _lock, _quiet_native_stderr():
        result = _face_mesh().process(np.ascontiguousarray(small))
    return [np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], dtype=np.float32)
            for lm in result.multi_face_landmarks or []]


def _tiles(h: int, w: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of square tiles of `side` covering the image with 50% overlap."""
    ys = sorted({min(y, h - side) for y in range(0, max(h - side, 0) + side // 2, max(side // 2, 1))})
    xs = sorted({min(x, w - side) for x in range(0, max(w - side, 0) + side // 2, max(side // 2, 1))})
    return [(y, x) for y in ys for x in xs]


def _box(p: np.ndarray) -> np.ndarray:
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-9)


def detect_all(image: np.ndarray) -> list[np.ndarray]:
    """All faces in an RGB uint8 image, largest first, each (478, 3) float32 in pixels of `image`.

    FaceMesh's detector wants faces that fill a good part of the frame, so a wide group photo or a
    small face in a big picture is also searched in overlapping square tiles (then halves of those).
    """
    faces = _detect(image)
    h, w = image.shape[:2]
    side = min(h, w)
    if not faces or max(h, w) > 1.3 * side:
        for tile in (side, side // 2):
            if tile < 128:
                break
            for y, x in _tiles(h, w, tile):
                for p in _detect(image[y:y + tile, x:x + tile]):
                    p[:, 0] += x
                    p[:, 1] += y
                    if all(_iou(_box(p), _box(q)) < 0.3 for q in faces):
                        faces.append(p)
            if faces:
                break
    faces.sort(key=lambda p: -np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
    return faces


def analyze(portrait: Portrait, face_index: int | None = None, warn: bool = True) -> FaceAnalysis:
    """Landmarks of one face. Several faces -> the largest (or `face_index`), with a warning."""
    faces = detect_all(portrait.image)
    name = portrait.source or "the image"
    if not faces:
        raise NoFaceError(
            f"{portrait.source}: no face found" if portrait.source else "has no face that can be found",
            "use a photo with one clearly visible, roughly frontal face (eyes and mouth visible, not covered)",
            field="image",
        )
    if face_index is not None and face_index >= len(faces):
        raise InputError(
            f"is {face_index}, but {name} has {len(faces)} face(s)",
            f"use a value from 0 (largest) to {len(faces) - 1}", field="face_index",
        )
    if len(faces) > 1 and face_index is None and warn:
        warnings.warn(f"{name} has {len(faces)} faces; animating the largest. Choose another with --face-index N "
                      f"(0 = largest, 1 = next, ...).", stacklevel=2)
    pts = faces[face_index or 0]
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    fa = FaceAnalysis(landmarks=pts, box=box, image_size=portrait.size, n_faces=len(faces))
    if fa.face_width < MIN_FACE_WIDTH:
        raise InputError(
            f"{portrait.source + ': the' if portrait.source else 'has a'} face is too small to animate "
            f"({fa.face_width:.0f} px wide; at least {MIN_FACE_WIDTH} px needed)",
            "use a larger or closer photo of the face", field="image",
        )
    return fa


def crop_box(face: FaceAnalysis, margin: float = 2.1) -> tuple[int, int, int]:
    """A square (x0, y0, side) centred on the face with `margin` x the landmark box, kept inside the image."""
    x0, y0, x1, y1 = face.box
    w, h = face.image_size
    side = int(round(max(x1 - x0, y1 - y0) * margin))
    side = min(side, w, h)
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 - 0.06 * (y1 - y0)  # a little headroom: landmarks stop at mid-forehead
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, top, side


def prepare(portrait: Portrait, size: int, crop: str = "face", face_index: int | None = None,
            warn: bool = True) -> tuple[Portrait, FaceAnalysis]:
    """Crop/scale the portrait to the output geometry and find the landmarks there.

    crop="face": a `size` x `size` square centred on the face. crop="full": the whole frame,
    longest side `size`, both sides even (H.264 yuv420p needs it).
    """
    face = analyze(portrait, face_index=face_index, warn=warn)
    img = portrait.image
    if crop == "face":
        left, top, side = crop_box(face)
        img = img[top:top + side, left:left + side]
        out_w = out_h = size - size % 2
    else:
        h, w = img.shape[:2]
        s = size / max(h, w)
        out_w, out_h = max(2, int(round(w * s)) // 2 * 2), max(2, int(round(h * s)) // 2 * 2)
    interp = cv2.INTER_AREA if img.shape[1] > out_w else cv2.INTER_CUBIC
    img = np.ascontiguousarray(cv2.resize(img, (out_w, out_h), interpolation=interp))
    out = Portrait(img, portrait.source)
    # Re-detect on the prepared image: landmarks must be exact at render resolution.
    faces = detect_all(img)
    if not faces:
        raise InputError(f"{size} is too small: the face in {portrait.source or 'the image'} cannot be found "
                         "again at that size", "use a larger size or a closer photo of the face", field="size")
    cx, cy = (face.landmarks[:, 0].mean(), face.landmarks[:, 1].mean())
    if crop == "face":
        cx, cy = (cx - left) * out_w / side, (cy - top) * out_h / side
    else:
        cx, cy = cx * out_w / portrait.size[0], cy * out_h / portrait.size[1]
    # the face nearest the chosen one's centre
    pts = min(faces, key=lambda p: (p[:, 0].mean() - cx) ** 2 + (p[:, 1].mean() - cy) ** 2)
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return out, FaceAnalysis(landmarks=pts, box=box, image_size=out.size, n_faces=face.n_faces,
                             source_landmarks=face.landmarks)
