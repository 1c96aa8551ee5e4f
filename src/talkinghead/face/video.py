"""Landmarks of a driving video: the face in every frame, resampled to the output frame rate (the head motion
and expressions a pose-driven engine follows), or read from a `.npy` landmark file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, NoFaceError, UnreadableMediaError, UnsupportedFormatError


def video_landmarks(path: Path, fps: float, n_frames: int) -> np.ndarray:
    """(frames, 478, 3) landmarks of the largest face in each frame of a driving video resampled to `fps`
    (nearest source frame); a frame without a face repeats the previous one."""
    import av

    from .landmarks import detect_all

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise UnreadableMediaError(f"{path} cannot be read as a video ({type(exc).__name__})",
                                   "pass a video file ffmpeg can decode (mp4, mov, mkv, webm)", field="pose_video") from None
    with container:
        if not container.streams.video:
            raise UnsupportedFormatError(f"{path} has no video stream", "pass a video of a talking face",
                                         field="pose_video")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        points: list[np.ndarray] = []
        out = 0
        for k, frame in enumerate(container.decode(stream)):
            if out >= n_frames:
                break
            if int(out * rate / fps + 0.5) != k:
                continue
            faces = detect_all(frame.to_ndarray(format="rgb24"))
            if faces:
                current = faces[0]
            elif points:
                current = points[-1]
            else:
                continue
            while out < n_frames and int(out * rate / fps + 0.5) == k:
                points.append(current)
                out += 1
    if not points:
        raise NoFaceError(f"{path}: no face found", "use a video of one clearly visible face", field="pose_video")
    return np.stack(points).astype(np.float32)


def landmark_file(path: Path, points: int | None = None) -> np.ndarray:
    """(frames, points, 2 or 3) landmarks of a `.npy` file, as stored; `points` pins how many points a frame has
    (478 for FaceMesh). A file numpy cannot read, or an array of another shape or with non-finite values, is an
    input error of the pose video."""
    shape = f"(frames, {points or 'points'}, 2 or 3)"
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UnreadableMediaError(f"{path} cannot be read as a landmark file ({exc})",
                                   f"save a float array of shape {shape} with numpy.save", field="pose_video") from None
    if array.ndim != 3 or (points is not None and array.shape[1] != points) or array.shape[2] not in (2, 3) \
            or not len(array) or not np.isfinite(array).all():
        raise InputError(f"{path} holds an array of shape {array.shape}, not {shape}",
                         "save landmark coordinates in pixels, one (points, 2 or 3) array per frame",
                         field="pose_video")
    return array
