"""The CLI's shape, from its table of commands: every subcommand takes --help and --quiet, those that print a
result take --json, inputs are positionals (or their old options) and the output is -o; --size means the output
frame side everywhere. Each case runs the real command in-process."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from talkinghead.assets import portrait_path, speech_path
from talkinghead.interfaces.cli import COMMANDS, JSON_HELP, SIZE_HELP, main
from talkinghead.io import probe


def cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _options(help_text: str) -> dict[str, str]:
    """Each option of a --help text with its help words (joined over wrapped lines)."""
    options, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r"\s{2}(?:-\w(?: \S+)?, )?(--[\w-]+)(?: \S+)?(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1)
            options[current] = m.group(2) or ""
        elif current and line.startswith(" " * 10) and line.strip():
            options[current] += " " + line.strip()
        else:
            current = None
    return options


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_every_command_has_help_quiet_and_json_where_it_prints(command, capsys):
    code, out, err = cli([command.name, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: talkinghead {command.name} {command.shape}\n")
    options = _options(out)
    assert options["--quiet"] == command.quiet
    if command.json:
        assert options["--json"] == JSON_HELP
    else:
        assert "--json" not in options
    if "--size" in options:
        assert options["--size"].startswith(SIZE_HELP), options["--size"]
    if "-o OUT.mp4" in command.shape or "-o DATASET" in command.shape:
        assert "-o" in out and "--output" in options


def test_commands_with_a_size_all_mean_the_output_frame_side(capsys):
    sized = []
    for command in COMMANDS:
        _, out, _ = cli([command.name, "--help"], capsys)
        if "--size" in _options(out):
            sized.append(command.name)
    assert sized == ["animate", "say", "preprocess", "synth"]


@pytest.fixture(scope="module")
def face() -> Path:
    return portrait_path("astronaut")


@pytest.fixture(scope="module")
def speech() -> Path:
    return speech_path("librivox_0880")[0]


def test_animate_takes_positionals_in_any_order_and_prints_json(face, speech, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    code, stdout, err = cli(["animate", face, "-o", out, speech, "--size", "128", "--quiet", "--json"], capsys)
    assert code == 0, err
    assert err == ""  # --quiet: no progress bar, no summary line
    result = json.loads(stdout)
    info = probe(out)
    assert result["output"] == str(out)
    assert (result["width"], result["height"], result["frames"]) == (128, 128, info["n_frames"])
    assert result["duration_s"] == pytest.approx(info["video_duration"])


def test_an_input_may_be_its_option_and_the_positionals_fill_the_rest(face, speech, tmp_path, capsys):
    out = tmp_path / "b.mp4"
    code, stdout, err = cli(["animate", "--audio", speech, face, "-o", out, "--size", "128"], capsys)
    assert code == 0, err
    assert stdout == "" and f"wrote {out} (128x128" in err  # the summary line, on stderr without --json
    assert probe(out)["width"] == 128


@pytest.mark.parametrize("argv, phrase", [
    (["animate", "{face}", "{speech}", "--audio", "{speech}"], "too many inputs"),
    (["animate", "--image", "{face}", "{face}", "{speech}"], "too many inputs"),
    (["animate", "{face}"], "AUDIO (or --audio)"),
    (["dub", "{speech}"], "AUDIO (or --audio)"),
    (["say", "hello"], "IMAGE (or --image)"),
    (["train"], "CONFIG (or --config)"),
    (["eval", "{speech}", "--json", "card.json"], "unrecognized arguments: card.json"),
])
def test_an_input_missing_or_given_twice_is_one_usage_error(face, speech, tmp_path, capsys, argv, phrase):
    argv = [a.format(face=face, speech=speech) for a in argv]
    if argv[0] in ("animate", "say", "dub"):
        argv += ["-o", tmp_path / "x.mp4"]
    code, _, err = cli(argv, capsys)
    assert code == 2 and phrase in err, err
    assert err.count("error:") == 1 and "how to fix" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_voices_and_systems_print_json(capsys):
    code, out, err = cli(["voices", "--json"], capsys)
    assert code == 0, err
    voices = json.loads(out)
    assert "en-us" in voices and "de" in voices
    assert "voices; pass one to" in err
    code, out, err = cli(["voices", "--quiet"], capsys)
    assert out.split() == voices and err == ""
    code, out, _ = cli(["systems", "--json", "--quiet"], capsys)
    assert code == 0 and "warp" in {row["name"] for row in json.loads(out)}


RATINGS = ("audio,video,engine,align,fidelity,rater\n"
           "a.wav,a_warp.mp4,warp,5,3,ann\n"
           "a.wav,a_hallo.mp4,hallo,2,1,ann\n")


def test_prefer_ratings_writes_pairs_and_prints_json(tmp_path, capsys):
    csv = tmp_path / "ratings.csv"
    csv.write_text(RATINGS)
    pairs = tmp_path / "pairs.jsonl"
    code, out, err = cli(["prefer", "ratings", csv, "-o", pairs, "--json", "--quiet"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["output"] == str(pairs) and result["candidates"] == 2
    (pair,) = result["pairs"]
    assert (pair["winner"], pair["loser"]) == ("a_warp.mp4", "a_hallo.mp4")
    assert pair["margin"] == pytest.approx(0.5 * (1.0 + 0.5) - 0.5 * (0.25 + 0.0))
    assert [json.loads(line)["winner"] for line in pairs.read_text().splitlines()] == ["a_warp.mp4"]
    assert err == ""


@pytest.mark.parametrize("csv_text, argv, phrase", [
    (RATINGS.replace(",5,3,", ",6,3,"), [], "line 2: align must be from 1 to 5, got 6"),
    (RATINGS.replace(",5,3,", ",five,3,"), [], "line 2: align must be a number, got 'five'"),
    (RATINGS, ["--engines", "warp,warp"], "ratings takes one CSV and no --engines"),
])
def test_prefer_refuses_bad_ratings_with_one_message(tmp_path, capsys, csv_text, argv, phrase):
    csv = tmp_path / "ratings.csv"
    csv.write_text(csv_text)
    code, _, err = cli(["prefer", "ratings", csv, "-o", tmp_path / "pairs.jsonl", *argv], capsys)
    assert code == 2 and phrase in err and "how to fix" in err, err
    assert not (tmp_path / "pairs.jsonl").exists()


@pytest.mark.parametrize("engines, phrase", [
    ("warp", "--engines must name at least two engines, got 1"),
    ("warp,nope", "unknown engine 'nope'"),
    ("warp,warp:head-motion", "controls need the form"),
    ("warp,warp:head-motion=7", "--head-motion must be between 0 and 2"),
])
def test_prefer_generate_refuses_bad_engines_before_rendering(face, speech, tmp_path, capsys, engines, phrase):
    code, _, err = cli(["prefer", "generate", face, speech, "--engines", engines, "--candidates",
                        tmp_path / "cands", "-o", tmp_path / "pairs.jsonl"], capsys)
    assert code == 2 and phrase in err, err
    assert not (tmp_path / "cands").exists() and not (tmp_path / "pairs.jsonl").exists()
