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
    ({"head-motion": "5"}, "between 0.0 and 2.0"),
])
def test_bad_options_give_one_clear_message(options, message):
    with pytest.raises(InputError, match=message):
        config_from_options(options)
