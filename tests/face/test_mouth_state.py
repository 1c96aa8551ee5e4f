"""A tongue sticking out of the portrait's mouth is found by colour and refused with a message about the image."""
from __future__ import annotations


import pytest

from talkinghead.assets import portrait
from talkinghead.errors import InputError
from talkinghead.face import prepare
from talkinghead.face.mouth_state import analyze_mouth, refuse_tongue_out
from talkinghead.types import Portrait
from benchmarks import robustness as corpus


def _prepared(img, size=256):
    por, face = prepare(Portrait(img, "test"), size)
    return por.image, face.landmarks


@pytest.mark.parametrize("size", [192, 512])
def test_tongue_out_is_found_and_refused(size):
    image, landmarks = _prepared(corpus.tongue_out(portrait("astronaut")), size)
    state = analyze_mouth(image, landmarks)
    assert state.tongue_out, state
    with pytest.raises(InputError) as e:
        refuse_tongue_out(image, landmarks)
    assert e.value.field == "image" and "tongue" in e.value.message and e.value.hint


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_lips_alone_are_not_a_tongue(name):
    image, landmarks = _prepared(portrait(name))
    state = analyze_mouth(image, landmarks)
    assert not state.tongue_out, state
    assert state.upper > 0.03  # the lips themselves were measured, not skipped
    assert refuse_tongue_out(image, landmarks) == state


def test_an_open_mouth_without_a_tongue_out_is_kept():
    """An open mouth (our own warp) is closed for the neutral mouth, not refused as a tongue."""
    image, landmarks = _prepared(corpus.warped(portrait("astronaut"), jaw=0.9))
    assert not analyze_mouth(image, landmarks).tongue_out


@pytest.mark.parametrize("size", [64, 512])
def test_the_engine_judges_the_source_photo_whatever_the_output_size(size):
    """A 64 px output has too few mouth pixels to tell lips from a tongue: the warp engine looks at the source
    photo, so the astronaut renders at any size and a tongue out is refused at any size."""
    from talkinghead.config import AnimateConfig, RenderConfig
    from talkinghead.systems.warp.engine import Animator

    config = AnimateConfig(render=RenderConfig(size=size))
    assert Animator(Portrait(portrait("astronaut"), "astronaut"), config).frame_size == (size, size)
    with pytest.raises(InputError) as e:
        Animator(Portrait(corpus.tongue_out(portrait("astronaut")), "tongue"), config)
    assert e.value.field == "image" and "tongue" in e.value.message
