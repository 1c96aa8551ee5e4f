"""Identity preservation: dlib's ResNet face descriptor (128-d, 5-point aligned) of generated frames
against the reference portrait; Euclidean distance, below 0.6 means the same person (dlib's LFW rule).
"""
from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SAME_PERSON_THRESHOLD = 0.6  # descriptor distance; dlib's documented threshold (99.38% on LFW)
DEFAULT_MAX_FRAMES = 25  # frames scored per video: ~0.1 s of detection + ~0.07 s of descriptor each
ALIGNER = "shape_predictor_5_face_landmarks.dat"  # the 5-point model (the 68-point one is non-commercial)
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = "pip install 'talkinghead[eval]'"

_lock = threading.Lock()  # dlib's DNN keeps per-call state in the net: one caller at a time
_models = None  # (detector, aligner, descriptor), loaded on first use


def _models_dir() -> Path | None:
    """The models/ folder of the face_recognition_models package, found without importing it
    (its __init__ imports pkg_resources, which newer setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def identity_available() -> str | None:
    """None when dlib and its two model files are present, else a one-line reason with the fix."""
    if importlib.util.find_spec("dlib") is None:
        return f"dlib is not installed: {INSTALL_HINT}"
    folder = _models_dir()
    if folder is None:
        return f"face_recognition_models (dlib's model files) is not installed: {INSTALL_HINT}"
    missing = [name for name in (ALIGNER, DESCRIPTOR) if not (folder / name).is_file()]
    if missing:
        return f"dlib model file(s) missing from {folder}: {', '.join(missing)}; reinstall: {INSTALL_HINT}"
    return None


def _load():
    """Detector, 5-point aligner and ResNet descriptor, loaded once per process (call under _lock)."""
    global _models
    if _models is None:
        reason = identity_available()
        if reason is not None:
            raise RuntimeError(reason)
        import dlib

        folder = _models_dir()
        _models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(folder / ALIGNER)),
                   dlib.face_recognition_model_v1(str(folder / DESCRIPTOR)))
    return _models


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) contiguous uint8 from RGB, RGBA (alpha dropped) or grayscale uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def _face_box(image: np.ndarray, detector):
    """Largest face as a dlib.rectangle, or None. HOG at native scale, then 2x upsampled (faces
    under ~80 px), then MediaPipe FaceMesh's box made square like HOG's (profiles, hard light)."""
    import dlib

    for upsample in (0, 1):
        boxes = list(detector(image, upsample))
        if boxes:
            return max(boxes, key=lambda r: r.area())
    from ..face.landmarks import detect_all

    faces = detect_all(image)  # largest first
    if not faces:
        return None
    p = faces[0]
    x0, y0, x1, y1 = p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()
    half = (x1 - x0) / 2  # HOG boxes are square, about as wide as the landmark box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))


def describe(image: np.ndarray) -> np.ndarray | None:
    """128-d face descriptor (float64, norm ~1.4; Euclidean distance < 0.6 = same person) of the
    largest face in an RGB uint8 image, or None when no face is found."""
    image = _as_rgb(image)
    with _lock:
        detector, aligner, descriptor = _load()
        box = _face_box(image, detector)
        if box is None:
            return None
        shape = aligner(image, box)
        return np.array(descriptor.compute_face_descriptor(image, shape), dtype=np.float64)


def evenly_spaced(frames: Sequence[np.ndarray], max_frames: int) -> list[np.ndarray]:
    """At most `max_frames` frames spread evenly over the clip, first and last included (a
    generator is read into a list first)."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if not hasattr(frames, "__len__") or not hasattr(frames, "__getitem__"):
        frames = list(frames)
    n = len(frames)
    if n <= max_frames:
        return [frames[i] for i in range(n)]
    return [frames[int(i)] for i in np.linspace(0, n - 1, max_frames).round().astype(int)]


def _result(reason: str | None = None, distances: np.ndarray | None = None,
            frames_scored: int | None = None, frames_without_face: int | None = None) -> dict:
    """The metrics dict; every metric is None unless `distances` holds at least one value."""
    ok = distances is not None and len(distances) > 0
    return {
        "distance_mean": float(distances.mean()) if ok else None,
        "distance_max": float(distances.max()) if ok else None,
        "distance_std": float(distances.std()) if ok else None,
        "same_person_rate": float((distances < SAME_PERSON_THRESHOLD).mean()) if ok else None,
        "threshold": SAME_PERSON_THRESHOLD,
        "frames_scored": frames_scored,
        "frames_without_face": frames_without_face,
        "reason": reason,
    }


def identity_metrics(frames: Sequence[np.ndarray], ref: np.ndarray | None,
                     max_frames: int = DEFAULT_MAX_FRAMES) -> dict:
    """Face-descriptor distance of up to `max_frames` evenly spaced RGB uint8 frames to `ref`.

    distance_* are Euclidean distances in dlib's 128-d space (0 = identical; same person < 0.6,
    different people typically 0.6-1.2); distance_std is the population std over scored frames;
    same_person_rate is the fraction of scored frames (those with a face) below the threshold, in
    [0, 1]. Whatever cannot be computed is None, and `reason` says why in one line.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if ref is None:
        return _result("no reference portrait given (ref): identity needs the face to compare against")
    reason = identity_available()
    if reason is not None:
        return _result(reason)
    picked = evenly_spaced(frames, max_frames)
    if not picked:
        return _result("no frames to score")
    ref_descriptor = describe(ref)
    if ref_descriptor is None:
        return _result("no face found in the reference portrait")
    descriptors = [d for d in map(describe, picked) if d is not None]
    missed = len(picked) - len(descriptors)
    if not descriptors:
        return _result(f"no face found in any of the {len(picked)} sampled frames", frames_scored=0,
                       frames_without_face=missed)
    distances = np.linalg.norm(np.stack(descriptors) - ref_descriptor, axis=1)
    return _result(None, distances, frames_scored=len(descriptors), frames_without_face=missed)
