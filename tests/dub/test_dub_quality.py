"""A dubbed video follows the new speech, keeps the person and everything outside the lower face,
and passes the cut-away through untouched."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.dub import Dubber, DubOptions, VideoSource, dub
from talkinghead.dub.testsrc import decode_frames as decode
from talkinghead.eval import identity
from talkinghead.eval.sync import aperture_series, sync_metrics
from talkinghead.face import regions as R
from talkinghead.face.landmarks import detect_all


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory, source_video, utterance_b):
    out = tmp_path_factory.mktemp("dubbed") / "dubbed.mp4"
    return dub(source_video, utterance_b, out)


@pytest.fixture(scope="module")
def frames(source_video, dubbed):
    return decode(source_video), decode(dubbed)


def test_mouth_follows_the_new_speech_not_the_old(frames, utterance_a, utterance_b):
    src, out = frames
    assert len(out) == len(src)
    ap = aperture_series(out)
    new, _, _ = sync_metrics(ap, utterance_b.samples, 25.0)
    old, _, _ = sync_metrics(ap, utterance_a.samples, 25.0)
    assert abs(new["offset_frames"]) <= 1, new
    assert new["confidence"] >= old["confidence"] + 0.1, (new, old)
    # and the source itself was in sync with the old speech, not the new
    src_old, _, _ = sync_metrics(aperture_series(src), utterance_a.samples, 25.0)
    assert abs(src_old["offset_frames"]) <= 1 and src_old["confidence"] > 0.3, src_old


def _lower_face_mask(frame: np.ndarray) -> np.ndarray:
    """True over the lower face (nose to below the chin, cheek to cheek, with a margin)."""
    mask = np.zeros(frame.shape[:2], bool)
    faces = detect_all(frame)
    if not faces:
        return mask
    p = faces[0]
    iod = float(np.linalg.norm(np.subtract(*R.eye_centres(p))))
    oval = p[list(R.FACE_OVAL), :2]
    x0, x1 = oval[:, 0].min() - 0.6 * iod, oval[:, 0].max() + 0.6 * iod
    y0, y1 = p[R.NOSE_TIP, 1] - 0.35 * iod, p[R.CHIN, 1] + 0.9 * iod
    mask[max(int(y0), 0):int(y1), max(int(x0), 0):int(x1)] = True
    return mask


def test_everything_outside_the_lower_face_is_the_source(frames):
    src, out = frames
    err, count = 0.0, 0
    for i in range(0, len(src), 3):
        keep = ~_lower_face_mask(src[i])
        d = src[i][keep].astype(np.float64) - out[i][keep]
        err += float((d ** 2).sum())
        count += d.size
    psnr = 10 * np.log10(255.0 ** 2 / max(err / count, 1e-12))
    assert psnr > 40.0, psnr


def test_identity_is_kept(frames, cutaway):
    reason = identity.identity_available()
    if reason is not None:
        pytest.skip(reason)
    src, out = frames
    dists = []
    for i in range(0, cutaway[0], 6):
        a, b = identity.describe(src[i]), identity.describe(out[i])
        assert a is not None and b is not None
        dists.append(float(np.linalg.norm(a - b)))
    assert max(dists) < 0.3, dists


def test_cutaway_frames_pass_through_unchanged(source_video, frames, utterance_b, cutaway):
    src, out = frames
    dubber = Dubber(VideoSource(source_video), utterance_b, DubOptions())
    seen = 0
    for i, (slot, frame) in enumerate(dubber.frames()):
        if cutaway[0] <= i < cutaway[0] + cutaway[1]:
            assert slot.landmarks is None
            np.testing.assert_array_equal(frame, src[i])  # the decoded source frame, bit for bit
            seen += 1
        elif i < cutaway[0]:
            assert slot.landmarks is not None  # the face is tracked in every other frame
    assert seen == cutaway[1]
    assert dubber.tracker.cuts == 2  # into the cut-away and back
    # in the encoded file the cut-away only went through the encoder once more
    for i in range(*cutaway):
        mse = np.mean((src[i].astype(np.float64) - out[i]) ** 2)
        assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-12)) > 40.0


def test_mouth_really_changes(frames, cutaway):
    """Frames where A and B differ most show different mouths than the source."""
    src, out = frames
    a_src = aperture_series(src[:cutaway[0]])
    a_out = aperture_series(out[:cutaway[0]])
    ok = np.isfinite(a_src) & np.isfinite(a_out)
    assert ok.sum() > 50
    assert np.corrcoef(a_src[ok], a_out[ok])[0, 1] < 0.6
    assert np.abs(a_src[ok] - a_out[ok]).max() > 0.08  # inter-ocular distances


def test_changed_region_meets_the_source_without_a_seam(source_video, utterance_b, frames):
    """The warp is the identity on the edge of the region it changes, so its border pixels are the
    source's exactly; and the mouth stays on the face as the head moves (no floating)."""
    src, _ = frames
    dubber = Dubber(VideoSource(source_video), utterance_b, DubOptions())
    checked = 0
    for i, (slot, frame) in enumerate(dubber.frames()):
        roi = dubber.compositor.last_roi
        if slot.landmarks is None or roi is None or i % 5:
            continue
        x0, y0, x1, y1 = roi
        for edge in (np.s_[y0, x0:x1], np.s_[y1 - 1, x0:x1], np.s_[y0:y1, x0], np.s_[y0:y1, x1 - 1]):
            np.testing.assert_array_equal(frame[edge], slot.image[edge])
        checked += 1
    assert checked > 20
    offsets = []
    for s, o in zip(src[:50], frames[1][:50]):
        fs, fo = detect_all(s), detect_all(o)
        if fs and fo:
            iod = float(np.linalg.norm(np.subtract(*R.eye_centres(fs[0]))))
            mouth = list(R.LIPS_OUTER_UPPER)
            # the mouth's horizontal place relative to the nose, source vs dub, in inter-ocular distances
            rel = [(p[mouth, 0].mean() - p[R.NOSE_TIP, 0]) / iod for p in (fs[0], fo[0])]
            offsets.append(abs(rel[0] - rel[1]))
    assert len(offsets) > 40 and max(offsets) < 0.06, max(offsets)
