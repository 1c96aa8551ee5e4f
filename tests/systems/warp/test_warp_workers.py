"""The warp engine renders a whole file with several threads: the same frames, in the same order,
as one thread gives (frames are independent once the motion track is made)."""
import numpy as np

from talkinghead.config import AnimateConfig, RenderConfig
from talkinghead.systems.warp.engine import Animator
from talkinghead.types import Speech


def test_threaded_frames_equal_sequential_frames(grace, librivox):
    speech, _ = librivox
    clip = Speech(speech.samples[: 2 * 16000])
    anim = Animator(grace, AnimateConfig(render=RenderConfig(size=192)))
    one = list(anim.stream([clip.samples], workers=1))
    three = list(anim.stream([clip.samples], workers=3))
    batch = list(anim.frames(clip))  # the batch path renders with RENDER_WORKERS threads
    assert len(one) == len(three) == len(batch) == anim.n_frames(clip)
    assert not all(np.array_equal(one[0], f) for f in one[1:])  # the face moves: order matters
    assert all(np.array_equal(a, b) for a, b in zip(one, three))
    assert all(np.array_equal(a, b) for a, b in zip(one, batch))


def test_a_consumer_that_stops_early_ends_the_render_threads(grace, librivox):
    import threading

    speech, _ = librivox
    anim = Animator(grace, AnimateConfig(render=RenderConfig(size=128)))
    frames = anim.stream([speech.samples[: 3 * 16000]], workers=2)
    next(frames)
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("talkinghead-render")]


def test_opencv_runs_single_threaded_while_render_threads_run_and_is_restored(grace, librivox):
    # the render threads already keep every core busy; OpenCV's own pool would only spin beside them
    import cv2

    speech, _ = librivox
    anim = Animator(grace, AnimateConfig(render=RenderConfig(size=128)))
    before = cv2.getNumThreads()
    frames = anim.stream([speech.samples[: 16000]], workers=2)
    next(frames)
    assert cv2.getNumThreads() == 1
    rest = list(frames)
    assert rest and cv2.getNumThreads() == before
