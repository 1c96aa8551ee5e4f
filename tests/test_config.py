"""Controls named like the CLI options (forms, query strings) map onto the typed config."""
import pytest

from talkinghead.config import config_from_options, option_names
from talkinghead.errors import InputError


def test_every_cli_option_is_known_and_strings_are_parsed():
    names = option_names()
    assert {"head-motion", "lips-only", "seed", "size", "steps"} <= set(names)
    c = config_from_options({"head-motion": "0.5", "lips_only": "true", "seed": "3", "size": "256", "steps": ""})
    assert (c.motion.head_motion, c.motion.lips_only, c.motion.seed, c.render.size, c.diffusion.steps) == \
        (0.5, True, 3, 256, None)


@pytest.mark.parametrize("options, message", [
    ({"head-motion": "x"}, "needs a number"),
    ({"seed": "1.5"}, "whole number"),
    ({"lips-only": "maybe"}, "true or false"),
    ({"nope": "1"}, "unknown option"),
    ({"head-motion": "5"}, "between 0 and 2"),
])
def test_bad_options_give_one_clear_message(options, message):
    with pytest.raises(InputError, match=message):
        config_from_options(options)


def test_every_control_is_declared_with_help_and_a_valid_default():
    from talkinghead.config import AnimateConfig, controls

    specs = controls()
    assert len({s.name for s in specs}) == len(specs)  # one name, one meaning
    for spec in specs:
        assert spec.meta.help, spec.name
        assert spec.check(spec.default) == spec.default or spec.kind == "paths", spec.name
    AnimateConfig().validate()


def test_errors_name_their_field_so_each_interface_can_word_it():
    with pytest.raises(InputError) as e:
        config_from_options({"head-motion": "5"})
    assert e.value.field == "head_motion"
    assert e.value.text("--head-motion") == "--head-motion must be between 0 and 2, got 5"


def test_readme_control_table_is_current():
    from pathlib import Path

    from talkinghead.config import markdown_controls

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- controls-table")
    body = readme[readme.index("\n", start) + 1: readme.index("<!-- /controls-table -->")].strip()
    assert body == markdown_controls(), "regenerate the README's control table from talkinghead.config.markdown_controls()"
