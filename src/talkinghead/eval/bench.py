"""`talkinghead bench`: one engine over a fixed case set (portraits x speech clips with transcripts),
the metrics card of every result plus speed and peak memory, as one Markdown and CSV table.

Each render runs in a fresh process so its peak memory (max RSS) is its own; the card is computed
afterwards with the portrait as --ref and the transcript as --text.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from .card import IMAGE_SUFFIXES, evaluate

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
BUNDLED_PORTRAITS = ("astronaut", "grace_hopper")


@dataclass
class Case:
    """One portrait with one speech clip; `text` is the transcript (None: acoustic mouth)."""

    name: str
    portrait: str  # image path
    audio: str  # audio path
    text: str | None


def default_cases() -> list[Case]:
    """The bundled set: astronaut and Grace Hopper x the two LibriVox clips (10 s of speech in all)."""
    from ..assets import SPEECH, portrait_path

    return [Case(f"{p}-{s}", str(portrait_path(p)), str(wav), txt.read_text().strip())
            for p in BUNDLED_PORTRAITS for s, (wav, txt) in SPEECH.items()]


def load_cases(folder: str | os.PathLike) -> list[Case]:
    """Every portrait image in `folder` x every audio clip there (a same-named .txt is its transcript)."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d} is not a folder", "pass a folder with portrait images and speech clips", field="cases")
    images = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    clips = sorted(p for p in d.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not images or not clips:
        raise InputError(f"{d} needs at least one portrait ({', '.join(IMAGE_SUFFIXES)}) and one "
                         f"speech clip ({', '.join(AUDIO_SUFFIXES)})", "add them, with transcripts as .txt beside the clips",
                         field="cases")
    cases = []
    for img in images:
        for clip in clips:
            txt = clip.with_suffix(".txt")
            cases.append(Case(f"{img.stem}-{clip.stem}", str(img), str(clip),
                              txt.read_text().strip() if txt.is_file() else None))
    return cases


def _render(case: Case, engine: str, config: dict, output: str, queue) -> None:
    """Child process: render one case, report (seconds, peak RSS MiB, audio seconds) or the error."""
    try:
        from pathlib import Path

        from ..config import AnimateConfig
        from ..io import check_output_path, load_audio
        from ..service import render, with_transcript

        speech = load_audio(case.audio)
        t0 = time.perf_counter()
        out = check_output_path(output)
        render(engine, case.portrait, with_transcript(speech, case.text), Path(out), AnimateConfig.from_dict(config))
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        queue.put(("ok", seconds, peak, speech.duration))
    except InputError as e:  # the user's mistake (e.g. no checkpoint folder): the parent stops, with its type and field
        queue.put(("input", type(e), e.message, e.hint, e.field))
    except Exception as e:  # reported to the parent as the case's error
        queue.put(("error", f"{type(e).__name__}: {e}"))


def render_case(case: Case, engine: str, config: dict, output: Path) -> dict:
    """Render in a fresh process; {render_s, realtime_x, peak_rss_mib, audio_s} or raise."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_render, args=(case, engine, config, str(output), queue))
    proc.start()
    try:
        result = queue.get(timeout=3600)
    finally:
        proc.join()
    if result[0] == "input":
        raise result[1](result[2], result[3], field=result[4])
    if result[0] == "error":
        raise RuntimeError(result[1])
    _, seconds, peak, audio_s = result
    return {"audio_s": audio_s, "render_s": seconds, "realtime_x": audio_s / seconds, "peak_rss_mib": peak}


COLUMNS = (  # (group, metric) shown in the table, after case / engine / speed / memory
    ("sync", "offset_frames"), ("sync", "confidence"), ("sync", "passed"),
    ("mouth", "articulation"), ("mouth", "silence_motion"), ("mouth", "bilabial_closure"),
    ("mouth", "open_vowel_rate"), ("mouth", "sharpness_vs_ref"),
    ("identity", "distance_mean"), ("stability", "jitter"), ("stability", "pose_speed_deg_s"),
    ("stability", "blinks_per_min"), ("stability", "background_psnr_db"), ("stability", "background_ssim"),
    ("container", "av_mismatch_ms"),
)


def run(engine: str, cases: list[Case], out_dir: Path, config: dict | None = None, progress=print) -> list[dict]:
    """Render and score every case; writes videos, bench.md, bench.csv and cards.json to out_dir.
    A user mistake (bad engine options, unreadable case) stops the bench with that one message."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(engine, cases, out_dir, config, progress)
    except InputError:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _run(engine: str, cases: list[Case], out_dir: Path, config: dict | None, progress) -> list[dict]:
    config = config or {}
    rows, cards = [], []
    for i, case in enumerate(cases, 1):
        video = out_dir / f"{case.name}.mp4"
        progress(f"[{i}/{len(cases)}] {case.name}: rendering with {engine}")
        row = {"case": case.name, "engine": engine}
        try:
            row.update(render_case(case, engine, config, video))
        except RuntimeError as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        progress(f"[{i}/{len(cases)}] {case.name}: scoring")
        card = evaluate(video, audio=case.audio, ref=case.portrait, text=case.text)
        cards.append({"case": asdict(case), "card": card})
        for g, k in COLUMNS:
            row[f"{g}.{k}"] = card[g].get(k)
        rows.append(row)
    _write(out_dir / "bench.csv", to_csv(rows))
    _write(out_dir / "bench.md", to_markdown(rows))
    _write(out_dir / "cards.json", json.dumps(cards, indent=2, default=str) + "\n")
    return rows


def _fields(rows: list[dict]) -> list[str]:
    base = ["case", "engine", "audio_s", "render_s", "realtime_x", "peak_rss_mib"]
    extra = [f"{g}.{k}" for g, k in COLUMNS]
    return base + extra + (["error"] if any("error" in r for r in rows) else [])


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "pass" if v else "fail"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_fields(rows), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in _fields(rows)})
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    cols = _fields(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) or "—" for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)
