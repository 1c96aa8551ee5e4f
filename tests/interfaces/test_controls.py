"""A control is declared once: a dummy one added to a config section shows up in the CLI's --help, the web
app's components and the HTTP API's OpenAPI schema, with its range and help, and reaches the config."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from talkinghead import config
from talkinghead.interfaces.cli import main

HELP = "a dummy control that only tests declare"


@pytest.fixture
def wobble(monkeypatch):
    """MotionConfig with one more control, `wobble`, in place of the real one for the test's duration."""
    @dataclass
    class Motion(config.MotionConfig):
        wobble: float = config.control(0.25, help=HELP, range=(0.0, 1.0), step=0.05)

    monkeypatch.setitem(config.SECTIONS, "motion", Motion)
    return Motion


def test_a_declared_control_reaches_the_config(wobble):
    c = config.config_from_options({"wobble": "0.5"})
    assert c.motion.wobble == 0.5
    with pytest.raises(config.InputError) as e:
        config.config_from_options({"wobble": "2"})
    assert e.value.field == "wobble"


def test_a_declared_control_is_a_cli_option(wobble, capsys):
    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    out = capsys.readouterr().out
    assert "--wobble" in out and HELP in out and "0..1" in out


def test_a_declared_control_is_a_web_component(wobble):
    from talkinghead.interfaces import web

    demo = web.build_app()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    slider = by_id["wobble"]
    assert (slider.minimum, slider.maximum, slider.value) == (0.0, 1.0, 0.25)
    assert HELP in slider.info


def test_a_declared_control_is_an_api_form_field(wobble):
    from talkinghead.interfaces.server import create_app

    schema = create_app().openapi()
    text = str(schema)
    assert "'wobble'" in text and HELP in text
