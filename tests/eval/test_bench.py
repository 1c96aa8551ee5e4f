"""`talkinghead bench`: one engine over a case folder -> one table of card metrics, speed and memory."""
from __future__ import annotations

import csv
import shutil

import pytest

from talkinghead.assets import portrait_path, speech_path
from talkinghead.eval.bench import default_cases, load_cases
from talkinghead.interfaces.cli import main


def test_default_cases_are_the_bundled_portraits_times_clips_with_transcripts():
    cases = default_cases()
    assert len(cases) == 4 and all(c.text for c in cases)
    assert len({c.portrait for c in cases}) == 2 and len({c.audio for c in cases}) == 2


def test_bench_writes_one_row_per_case_with_speed_memory_and_card(tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(portrait_path("grace_hopper"), cases / "grace.jpg")
    wav, text = speech_path("librivox_0880")
    shutil.copy(wav, cases / "clip.wav")
    (cases / "clip.txt").write_text(text)
    assert [c.text for c in load_cases(cases)] == [text]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["bench", "--engine", "warp", "--cases", str(cases), "-o", str(out)])
    assert e.value.code == 0
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["case"] for r in rows] == ["grace-clip"]
    row = rows[0]
    assert float(row["realtime_x"]) > 0 and float(row["peak_rss_mib"]) > 50
    assert row["sync.passed"] == "pass" and float(row["identity.distance_mean"]) < 0.6
    assert (out / "grace-clip.mp4").is_file() and (out / "cards.json").is_file()
    assert "| grace-clip | warp |" in capsys.readouterr().out


def test_bench_refuses_a_case_folder_without_portraits_or_clips(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--cases", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs at least one portrait" in err and "Traceback" not in err


def test_bench_stops_at_once_on_a_user_mistake(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["bench", "--engine", "hallo", "-o", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--checkpoint-dir is needed by engine hallo" in err and "Traceback" not in err
    assert not out.exists()
