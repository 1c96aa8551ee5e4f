"""Command line: `talkinghead COMMAND INPUTS -o OUTPUT [options]`, one subcommand per entry of COMMANDS.

Every control declared in config.py is an option named after it (`head_motion` -> --head-motion). Every
subcommand takes --help and --quiet; those that print a result take --json (that result as JSON on stdout).
Inputs are positionals, each also accepted as its option (`animate face.jpg speech.wav` or `--image face.jpg
--audio speech.wav`). A user mistake prints one message with the fix and exits with code 2, leaving no output
file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from ..config import AnimateConfig, DiffusionConfig
from ..errors import InputError, TalkingHeadError
from ..systems import engine_names, verifier_names

EXIT_USAGE = 2
DEMO_TEXT = ("Hello! I am a talking head, made from a single photo on your own computer. "
             "No downloads, no graphics card, just press play.")
SIZE_HELP = "output frame side in pixels"  # what --size means in every command that has it
JSON_HELP = "print the result as JSON on stdout"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line + the fix, exit 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n  how to fix: see `{self.prog} --help`\n")
        raise SystemExit(EXIT_USAGE)


class _CommandParser(_Parser):
    """A subcommand's parser: its positionals and options may come in any order
    (`animate face.jpg -o out.mp4 speech.wav`), which argparse's own parse leaves to parse_intermixed_args."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line and usage shape, the function adding its arguments and the one
    running it.

    `heavy`: adding its arguments imports heavy packages, so they are added only when this command runs (or
    for the whole parser), which keeps `--help` and `animate` fast. `quiet`: what --quiet leaves out.
    `json`: it prints a result, so it takes --json."""

    name: str
    help: str
    shape: str  # its usage line after the name: inputs, then -o OUTPUT, then "[options]"
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    quiet: str = "no progress or notes on stderr"
    json: bool = True
    heavy: bool = False


# ------------------------------------------------------------------------------------------ shared arguments
GROUPS = {"motion": ("motion controls", None), "render": ("output", None),
          "diffusion": ("engine", "warp (default) runs anywhere; the others need weights in a local folder "
                                  "(`talkinghead systems` lists what each needs)")}


def _add_controls(p: argparse.ArgumentParser, sections: tuple[str, ...], groups: dict | None = None) -> None:
    """One option per control declared in config.py (`head_motion` -> --head-motion), grouped by section
    (into `groups[section]` where given)."""
    from ..config import controls

    groups = dict(groups or {})
    for section in sections:
        if section not in groups:
            groups[section] = p.add_argument_group(*GROUPS.get(section, (section, None)))
    for spec in controls():
        if spec.section not in groups:
            continue
        g, flag, help_ = groups[spec.section], "--" + spec.flag, spec.describe().replace("%", "%%")
        if spec.kind == "bool":
            g.add_argument(flag, dest=spec.name, action="store_true", help=help_)
        elif spec.kind == "paths":
            g.add_argument(flag, dest=spec.name, action="append", default=[], metavar="PATH", help=help_)
        elif spec.kind in ("int", "float"):
            kind = int if spec.kind == "int" or spec.meta.integer else float
            g.add_argument(flag, dest=spec.name, type=_number(kind, flag), default=spec.default, help=help_)
        else:
            g.add_argument(flag, dest=spec.name, default=spec.default, choices=spec.meta.choices or None,
                           metavar="PATH" if spec.kind == "path" else None, help=help_)


def _number(kind, flag):
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs {'a whole number' if kind is int else 'a number'}, "
                                             f"got {s!r}") from None
        return v
    return parse


def _config(args) -> AnimateConfig:
    """The AnimateConfig of a command's control options (each validated against its declaration)."""
    from ..config import config_from_options, controls

    return config_from_options({spec.flag: getattr(args, spec.name) for spec in controls()
                                if hasattr(args, spec.name)})


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and the diffusion engines' controls."""
    g = p.add_argument_group(*GROUPS["diffusion"])
    g.add_argument("--engine", default="warp", choices=engine_names(), help="which engine renders")
    _add_controls(p, ("diffusion",), {"diffusion": g})


def _inputs(p: argparse.ArgumentParser, *inputs: tuple[str, str]) -> None:
    """Positional inputs (`animate IMAGE AUDIO`), each also accepted as its option (`--image IMAGE`); the
    positionals fill, in order, the inputs not given as options (`_resolve_inputs`)."""
    for name, help_ in inputs:
        p.add_argument(name, nargs="?", metavar=name.upper(), help=f"{help_}; or give --{name}")
    g = p.add_argument_group("inputs as options", "each input may be given as an option instead of a positional")
    for name, _ in inputs:
        g.add_argument("--" + name, dest=f"{name}_option", metavar=name.upper(), help=f"the same as {name.upper()}")
    p.set_defaults(inputs=tuple(name for name, _ in inputs))


def _resolve_inputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Each input from its option, or else from the next positional; one usage error for an input missing
    or given twice."""
    names = getattr(args, "inputs", ())
    positionals = [getattr(args, n) for n in names if getattr(args, n) is not None]
    as_options = [n for n in names if getattr(args, f"{n}_option") is not None]
    open_ = [n for n in names if n not in as_options]
    if len(positionals) > len(open_):
        flags = " ".join(f"--{n} {getattr(args, f'{n}_option')}" for n in as_options)
        parser.error(f"too many inputs: {' '.join(positionals)} and {flags}; give "
                     f"{' '.join(n.upper() for n in names)} once each, as a positional or as its option")
    missing = open_[len(positionals):]
    if missing:
        parser.error("the following arguments are required: "
                     + ", ".join(f"{n.upper()} (or --{n})" for n in missing))
    for n in as_options:
        setattr(args, n, getattr(args, f"{n}_option"))
    for n, value in zip(open_, positionals):
        setattr(args, n, value)


def _print_json(data) -> None:
    print(json.dumps(_jsonable(data), indent=2))


def _jsonable(x):
    """Plain JSON values: numpy scalars as numbers, paths as text, NaN and infinities as null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _note(args, message: str) -> None:
    """A line for the person at the terminal (stderr), left out with --quiet."""
    if not args.quiet:
        print(message, file=sys.stderr)


def _writable(path: str | None, suffixes: tuple[str, ...], flag: str) -> None:
    """Refuse an output path before the work starts: wrong suffix or a folder that is not writable."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {p} must end in {' or '.join(suffixes)}", f"e.g. {flag} out{suffixes[0]}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {flag} {p}: folder {parent} is missing or not writable",
                         "choose a folder that exists and that you can write to")


# ------------------------------------------------------------------------------------------ render commands
RENDER_QUIET = "no progress bar or summary line"
IMAGE_HELP = "portrait photo (jpg, png, webp, ...)"
AUDIO_HELP = "speech (wav, mp3, flac, ogg, m4a, or a video's audio)"
TEXT_HELP = "the words spoken (text or a .txt file): sharper lip-sync for English"


def _video_output(p: argparse.ArgumentParser, default: str | None = None) -> None:
    if default is None:
        p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    else:
        p.add_argument("-o", "--output", default=default, help=f"output video (.mp4; default {default})")
    p.add_argument("--preview", help="also write a contact sheet of frames (png)")


def _render_options(p: argparse.ArgumentParser) -> None:
    _video_output(p)
    p.add_argument("--audio-bitrate", metavar="KBPS",
                   help="AAC bit rate of the video's sound in kb/s, e.g. 192 or 192k (default: transparent, "
                        "96 per channel; the sound keeps the input's sample rate and channels)")
    _add_controls(p, ("motion", "render"))
    _add_engine_options(p)


def _animate_arguments(p) -> None:
    _inputs(p, ("image", IMAGE_HELP), ("audio", AUDIO_HELP))
    p.add_argument("--text", help=TEXT_HELP)
    _render_options(p)


def _say_arguments(p) -> None:
    p.add_argument("text", help="what to say")
    _inputs(p, ("image", IMAGE_HELP))
    p.add_argument("--voice", default="en-us", help="espeak-ng voice / language, e.g. en-us, de, fr, cmn "
                                                    "(`talkinghead voices` lists them)")
    _render_options(p)


def _demo_arguments(p) -> None:
    _video_output(p, default="demo.mp4")


def _dub_arguments(p) -> None:
    """Its options come from the dub package (video decoding, tracking, OpenCV): a heavy command."""
    from ..dub.pipeline import FITS, MIX_RANGE

    _inputs(p, ("video", "the video to dub (mp4, mov, mkv, webm, ...)"),
            ("audio", "the new speech (wav, mp3, flac, ogg, m4a, or a video's audio)"))
    p.add_argument("--text", help=TEXT_HELP)
    _video_output(p)
    p.add_argument("--fit", default="pingpong", choices=FITS,
                   help="speech longer than the video: extend it back and forth (pingpong, default), from the start "
                        "(loop) or by holding the last frame (freeze); trim: stop at whichever ends first. A shorter "
                        "speech leaves the rest of the video with a closed mouth (unless trim)")
    p.add_argument("--face", default="largest", choices=("largest", "auto-speaker"),
                   help="which face to dub: the largest, or the one whose lips move most (default largest)")
    p.add_argument("--face-index", type=_number(int, "--face-index"),
                   help="dub the N-th face by size instead (0 = largest)")
    p.add_argument("--keep-original-audio", type=_number(float, "--keep-original-audio"), metavar="DB",
                   help=f"mix the video's own sound this many dB under the speech ({MIX_RANGE[0]:g}..{MIX_RANGE[1]:g}, "
                        "e.g. -18)")
    p.add_argument("--mouth-scale", type=_number(float, "--mouth-scale"), default=1.0,
                   help="0 = closed .. 1 = natural .. 2 = exaggerated (default 1)")
    p.add_argument("--max-seconds", type=_number(float, "--max-seconds"), default=600.0,
                   help="refuse a video or speech longer than this (default 600)")
    p.add_argument("--audio-bitrate", metavar="KBPS", help="AAC bit rate of the sound in kb/s (default: transparent)")


def _animate(args) -> int:
    from .. import api

    t0 = time.perf_counter()
    out = api.animate(args.image, args.audio, args.output, text=args.text, config=_config(args),
                      preview=args.preview, progress=not args.quiet, engine=args.engine,
                      audio_bitrate=args.audio_bitrate)
    return _rendered(args, out, t0)


def _say(args) -> int:
    from .. import api

    t0 = time.perf_counter()
    out = api.say(args.text, args.image, args.output, voice=args.voice, config=_config(args),
                  preview=args.preview, progress=not args.quiet, engine=args.engine,
                  audio_bitrate=args.audio_bitrate)
    return _rendered(args, out, t0)


def _demo(args) -> int:
    from .. import api
    from ..assets import portrait

    t0 = time.perf_counter()
    out = api.say(DEMO_TEXT, portrait("astronaut"), args.output, voice="en-us", preview=args.preview,
                  progress=not args.quiet)
    return _rendered(args, out, t0)


def _dub(args) -> int:
    from ..dub import DubOptions, dub

    t0 = time.perf_counter()
    options = DubOptions(fit=args.fit, face=args.face, face_index=args.face_index,
                         keep_original_audio=args.keep_original_audio, max_seconds=args.max_seconds,
                         mouth_scale=args.mouth_scale)
    out = dub(args.video, args.audio, args.output, text=args.text, options=options, preview=args.preview,
              progress=not args.quiet, audio_bitrate=args.audio_bitrate)
    return _rendered(args, out, t0)


def _rendered(args, out, t0: float) -> int:
    """The render commands' result: one summary line on stderr, or with --json an object on stdout."""
    from ..io import probe

    seconds = time.perf_counter() - t0
    info = probe(Path(out), decode=False)  # headers only: decoding the whole video again would cost seconds
    duration = info.get("video_duration") or 0.0
    result = {"output": str(out), "width": info["width"], "height": info["height"], "frames": info["n_frames"],
              "duration_s": duration, "elapsed_s": round(seconds, 3),
              "x_real_time": round(duration / max(seconds, 1e-9), 2),
              "preview": getattr(args, "preview", None)}
    if args.json:
        _print_json(result)
    _note(args, f"wrote {out} ({info['width']}x{info['height']}, {info['n_frames']} frames, {duration:.1f} s) "
                f"in {seconds:.1f} s — {result['x_real_time']:.1f}x real time")
    return 0


# ------------------------------------------------------------------------------------------ listing commands
def _voices(args) -> int:
    from ..audio.tts import list_voices

    voices = list_voices()
    if args.json:
        _print_json(voices)
    else:
        print("\n".join(voices))
    _note(args, f"{len(voices)} voices; pass one to `talkinghead say --voice`")
    return 0


def _systems(args) -> int:
    """The registry as a table (or JSON): what each system can do here and what is missing."""
    from ..systems import CAPABILITIES, SYSTEMS

    rows = [s.to_dict() for s in SYSTEMS.values()]
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'system':<12} {'family':<15} {'weights':<9} " + " ".join(f"{c:<7}" for c in CAPABILITIES))
    for r in rows:
        print(f"{r['name']:<12} {r['family']:<15} {r['weights']:<9} "
              + " ".join(f"{'yes' if r[c] else '-':<7}" for c in CAPABILITIES))
    if not args.quiet:
        print()
        for r in rows:
            for gap in r["missing"]:
                print(f"{r['name']}: {gap}")
    return 0


def _verify_arguments(p) -> None:
    p.add_argument("model", metavar="NAME", choices=verifier_names(),
                   help="which system's reference data format: " + ", ".join(verifier_names()))
    p.add_argument("fixture_dir", metavar="DIR", help="reference-data folder made by running the official code "
                                                      "(tiny config)")


def _verify(args) -> int:
    """One line per compared output (with --quiet only the failed ones) and the total; exit 1 if any
    output is above its tolerance."""
    from ..systems import get, resolve

    fixture = Path(args.fixture_dir)
    if not fixture.is_dir():
        raise InputError(f"reference-data folder {fixture} does not exist",
                         f"pass the folder made by running the official {args.model} code")
    checks = resolve(get(args.model).verifier)(fixture)
    failed = [c for c in checks if not c.passed]
    if args.json:
        _print_json({"system": args.model, "passed": len(checks) - len(failed), "total": len(checks),
                     "checks": [{"name": c.name, "max_abs_diff": c.max_abs_diff, "tolerance": c.tolerance,
                                 "passed": c.passed} for c in checks]})
    else:
        for check in failed if args.quiet else checks:
            print(check.line())
        print(f"{len(checks) - len(failed)}/{len(checks)} outputs within tolerance")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------ evaluation
def _eval_arguments(p) -> None:
    p.add_argument("video", metavar="VIDEO", help="a video, or a folder of videos (a same-named .txt beside each is its transcript)")
    p.add_argument("-o", "--output", metavar="CARD.json", help="also write the card as JSON to this file")
    p.add_argument("--audio", help="judge against this speech instead of the video's own audio track")
    p.add_argument("--ref", help="the portrait the video was made from (a folder of them, named like the "
                                 "videos, in folder mode): identity, background and mouth sharpness")
    p.add_argument("--text", help="the words spoken (text or .txt): bilabial closure and open vowels")
    p.add_argument("--real", help="folder mode: real frames or videos to compute FID/KID against")
    p.add_argument("--plot", help="single video: PNG of mouth aperture vs audio envelope and correlation vs lag")


def _eval(args) -> int:
    """Print the card as a table (or JSON); optionally write it as JSON and a plot."""
    from ..eval import card as C

    _writable(args.output, (".json",), "-o")
    _writable(args.plot, (".png",), "--plot")
    target = Path(args.video)
    if not target.exists():
        raise InputError(f"{target} does not exist", "pass a video file or a folder of videos")
    if target.is_dir():
        if args.audio or args.plot or args.text:
            raise InputError("--audio, --text and --plot apply to a single video",
                             "in folder mode put NAME.txt transcripts beside the videos and use the videos' own audio")
        result = C.evaluate_folder(target, ref=args.ref, real=args.real)
    else:
        if args.real:
            raise InputError("--real applies to folder mode", "pass a folder of videos to compare with real footage")
        result, series = C.evaluate_with_series(target, audio=args.audio, ref=args.ref, text=args.text)
        if args.plot:
            C.plot(series, result, args.plot)
            _note(args, f"wrote {args.plot}")
    if args.output:  # the files first: what is printed may go to a reader that stops early
        C.write_json(result, args.output)
        _note(args, f"wrote {args.output}")
    if args.json:
        _print_json(result)
    elif target.is_dir():
        if not args.quiet:
            for card in result["videos"]:
                print(C.format_table(card) + "\n")
        print(C.format_table({"video": f"{target} (mean of {len(result['videos'])} videos)", **result["summary"]}))
        dist = result["distribution"]
        print("\ndistribution: " + ", ".join(f"{k} {C._fmt(v)}" for k, v in dist.items() if k != "missing")
              + "".join(f"\n  {k}: {why}" for k, why in dist["missing"].items()))
    else:
        print(C.format_table(result))
    return 0


def _bench_arguments(p) -> None:
    p.add_argument("-o", "--output", default=None, metavar="FOLDER",
                   help="folder for videos and the tables (default bench-ENGINE)")
    p.add_argument("--cases", help="folder of portraits and speech clips (+ .txt transcripts); "
                                   "default: 2 bundled portraits x 2 LibriVox clips")
    _add_engine_options(p)


def _bench(args) -> int:
    """Render every case with one engine; print the Markdown table (or the rows as JSON)."""
    from ..eval import bench

    cases = bench.load_cases(args.cases) if args.cases else bench.default_cases()
    diffusion = {f.name: getattr(args, f.name) for f in fields(DiffusionConfig)}
    out = Path(args.output or f"bench-{args.engine}")
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file", "pass a folder for the bench results")
    rows = bench.run(args.engine, cases, out, {"diffusion": diffusion}, progress=lambda m: _note(args, m))
    if args.json:
        _print_json(rows)
    else:
        print(bench.to_markdown(rows))
    _note(args, f"wrote {out / 'bench.md'}, {out / 'bench.csv'} and {out / 'cards.json'}")
    return 1 if any("error" in r for r in rows) else 0


# ------------------------------------------------------------------------------------------ training
def _preprocess_arguments(p) -> None:
    p.add_argument("videos", metavar="VIDEOS", help="folder of videos (mp4, mov, mkv, webm, avi)")
    p.add_argument("-o", "--output", required=True, metavar="DATASET",
                   help="output dataset folder (resumable: rerun to continue)")
    p.add_argument("--size", type=_number(int, "--size"), default=512,
                   help=f"{SIZE_HELP}: the square face crop (default 512)")
    p.add_argument("--workers", type=_number(int, "--workers"), default=2, help="parallel processes (default 2)")
    p.add_argument("--audio-model", help="local wav2vec2 or whisper folder: also store its features")
    p.add_argument("--body", action="store_true", help="also store hand and body keypoints (MediaPipe Hands + "
                                                        "Pose), which EMO2 trains on")


def _preprocess(args) -> int:
    """Preprocess a folder of videos; say what was skipped and why."""
    from ..train.preprocess import preprocess

    report = preprocess(args.videos, args.output, size=args.size, workers=args.workers,
                        audio_model=args.audio_model, body=args.body, progress=not args.quiet)
    if args.json:
        _print_json({"dataset": args.output, "processed": report.processed, "reused": report.reused,
                     "skipped": [{"video": s, "reason": r} for s, r in report.skipped]})
    for source, reason in report.skipped:
        _note(args, f"skipped {source}: {reason}")
    _note(args, f"{len(report.processed)} videos in {args.output}, {len(report.skipped)} skipped")
    return 0 if report.processed else 1


def _synth_arguments(p) -> None:
    p.add_argument("-o", "--output", required=True, metavar="DATASET",
                   help="output folder for NAME.mp4 + NAME.json (true phoneme timings)")
    p.add_argument("--clips", type=_number(int, "--clips"), default=20, help="how many clips (default 20)")
    p.add_argument("--size", type=_number(int, "--size"), default=256, help=f"{SIZE_HELP} (default 256)")
    p.add_argument("--seed", type=_number(int, "--seed"), default=0, help="random seed (default 0)")


def _synth(args) -> int:
    from ..data.synth import synth

    paths = synth(args.output, clips=args.clips, size=args.size, seed=args.seed, progress=not args.quiet)
    if args.json:
        _print_json({"dataset": args.output, "clips": [str(p) for p in paths]})
    _note(args, f"wrote {len(paths)} clips to {args.output}")
    return 0


def _train_arguments(p) -> None:
    _inputs(p, ("config", "stage config YAML, e.g. configs/train/emo_stage1.yaml"))
    p.add_argument("-o", "--output-dir", metavar="FOLDER", help="override the config's output folder")
    p.add_argument("--dataset", help="override the config's dataset folder")
    p.add_argument("--max-steps", type=_number(int, "--max-steps"), help="override the config's max_steps")
    p.add_argument("--no-resume", action="store_true", help="start over even if the output folder has checkpoints")
    p.add_argument("--smoke", action="store_true",
                   help="check the config: two steps of its system's tiny variant on a generated dataset, in a "
                        "temporary folder (or -o)")


def _train(args) -> int:
    """Train one stage (resuming from the latest checkpoint in the output folder)."""
    from ..train.trainer import TrainConfig, train

    if args.smoke:
        from ..train.smoke import smoke_train

        trainer = smoke_train(TrainConfig.from_yaml(args.config), args.output_dir)
        losses = [r["loss"] for r in trainer.history]
        if args.json:
            _print_json({"config": args.config, "smoke": True, "step": trainer.step, "losses": losses})
        _note(args, f"smoke run of {args.config} passed: {trainer.step} steps of the tiny variant, losses "
                    + ", ".join(f"{x:.4g}" for x in losses))
        return 0
    overrides = {k: v for k, v in (("dataset", args.dataset), ("output_dir", args.output_dir),
                                   ("max_steps", args.max_steps)) if v is not None}
    if args.quiet:
        overrides["progress"] = False
    trainer = train(TrainConfig.from_yaml(args.config, overrides), resume=not args.no_resume)
    last = trainer.history[-1]["loss"] if trainer.history else float("nan")
    if args.json:
        _print_json({"config": args.config, "smoke": False, "step": trainer.step, "loss": last,
                     "checkpoints": str(trainer.out / "checkpoints")})
    _note(args, f"trained to step {trainer.step} (loss {last:.4g}); checkpoints in {trainer.out / 'checkpoints'}")
    return 0


PREFER_MODES = ("ratings", "generate")


def _prefer_arguments(p) -> None:
    p.add_argument("mode", choices=PREFER_MODES, metavar="MODE",
                   help="ratings: pairs from a CSV of human ratings (columns audio, video, align, fidelity 1-5; "
                        "optional engine, rater); generate: render every audio with several engines and score the "
                        "videos with the eval card")
    p.add_argument("sources", nargs="+", metavar="INPUT",
                   help="ratings: the CSV; generate: the portrait, then one or more speech files")
    p.add_argument("-o", "--output", default="pairs.jsonl", metavar="PAIRS.jsonl",
                   help="the pairs, one JSON object a line (default pairs.jsonl)")
    p.add_argument("--min-margin", type=_number(float, "--min-margin"), default=0.0,
                   help="drop pairs whose reward margin is this or less (default 0)")
    p.add_argument("--engines", help="generate: comma-separated engine names, each optionally with controls "
                                     "as NAME:head-motion=0.5;size=256 (at least two)")
    p.add_argument("--candidates", metavar="FOLDER", help="generate: folder for the rendered videos "
                                                          "(default candidates)")


def _prefer(args) -> int:
    """Hallo4 preference pairs (train/preference.py; candidates: data/preference.py), best against worst per audio."""
    from ..config import config_from_options
    from ..data import preference as G
    from ..train import preference as P

    _writable(args.output, (".jsonl",), "-o")
    if args.mode == "ratings":
        if len(args.sources) != 1 or args.engines or args.candidates:
            raise InputError("ratings takes one CSV and no --engines or --candidates",
                             "e.g. talkinghead prefer ratings ratings.csv -o pairs.jsonl")
        candidates = P.read_ratings(args.sources[0])
    else:
        if len(args.sources) < 2:
            raise InputError("generate needs a portrait and at least one speech file",
                             "e.g. talkinghead prefer generate face.png a.wav b.wav --engines warp,hallo")
        portrait, audios = args.sources[0], args.sources[1:]
        engines = {}
        for spec in args.engines.split(",") if args.engines else ():
            name, _, options = spec.partition(":")
            if name not in engine_names():
                raise InputError(f"unknown engine {name!r} in --engines", "known: " + ", ".join(engine_names()))
            pairs = [kv.split("=", 1) for kv in options.split(";") if kv]
            if any(len(kv) != 2 for kv in pairs):
                raise InputError(f"{spec!r} in --engines: controls need the form NAME:control=value;control=value",
                                 "e.g. --engines warp,warp:head-motion=0.5;mouth-scale=0.2")
            config_from_options(dict(pairs))  # a bad control is refused before anything renders
            engines[spec] = G.engine_runner(name, **dict(pairs))
        triples = G.generate_candidates(portrait, audios, engines, args.candidates or "candidates")
        candidates = G.score_with_card(triples, portrait)
    pairs = P.best_vs_worst(candidates, args.min_margin)
    P.write_pairs(pairs, args.output)
    if args.json:
        _print_json({"output": args.output, "candidates": len(candidates),
                     "pairs": [{**vars(x), "margin": x.margin} for x in pairs]})
    _note(args, f"{len(pairs)} pairs from {len(candidates)} candidates -> {args.output}")
    return 0


# ------------------------------------------------------------------------------------------ servers
def _serve_arguments(p) -> None:
    """One option per server Settings field, with the field's own help."""
    from dataclasses import MISSING as NONE

    from .settings import Settings

    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = f.default if f.default is not NONE else None
        help_ = f.metadata.get("help", "") + (f" (default {default})" if default is not None else "")
        if kind.startswith("int"):
            p.add_argument(flag, type=_number(int, flag), default=None, help=help_)
        elif kind.startswith("float"):
            p.add_argument(flag, type=_number(float, flag), default=None, help=help_)
        else:
            p.add_argument(flag, default=None, help=help_)
    p.add_argument("--log-level", default=None, choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info; warning with --quiet)")


def _serve(args) -> int:
    from .server import serve
    from .settings import Settings

    serve(log_level=args.log_level or ("warning" if args.quiet else "info"),
          **{f.name: getattr(args, f.name) for f in fields(Settings)})
    return 0


def _web_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_number(int, "--port"), default=7860, help="port (default 7860)")
    p.add_argument("--checkpoint-dir", help="official release folder, to offer the hallo/hallo2 engines")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")


def _web(args) -> int:
    import logging

    from .web import launch

    if args.quiet:  # the request log of the web server and its HTTP client
        for name in ("gradio", "uvicorn", "uvicorn.access", "uvicorn.error", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        launch(host=args.host, port=args.port, checkpoint_dir=args.checkpoint_dir, share=args.share)
    except OSError as e:  # port taken, address not on this machine
        raise InputError(f"cannot listen on {args.host}:{args.port}: {e}", "choose another --port or --host") from None
    return 0


def _none(p) -> None:
    """A command without arguments of its own."""


# ------------------------------------------------------------------------------------------ the table
COMMANDS: tuple[Command, ...] = (
    Command("animate", "animate a portrait with recorded speech", "IMAGE AUDIO -o OUT.mp4 [options]",
            _animate_arguments, _animate, quiet=RENDER_QUIET),
    Command("say", "speak typed text with espeak-ng and animate a portrait", "TEXT IMAGE -o OUT.mp4 [options]",
            _say_arguments, _say, quiet=RENDER_QUIET),
    Command("dub", "re-sync the lips of the face in a video to new speech (dubbing)",
            "VIDEO AUDIO -o OUT.mp4 [options]", _dub_arguments, _dub, quiet=RENDER_QUIET, heavy=True),
    Command("demo", "render a demo video from a bundled portrait and generated speech", "[-o OUT.mp4] [options]",
            _demo_arguments, _demo, quiet=RENDER_QUIET),
    Command("voices", "list espeak-ng voices for `say --voice`", "[options]", _none, _voices,
            quiet="the list only"),
    Command("verify", "compare our modules with reference data made by the official code", "NAME DIR [options]",
            _verify_arguments, _verify, quiet="only the outputs above their tolerance, and the total"),
    Command("systems", "list every system: what it can do here (render, train, verify) and what is missing",
            "[options]", _none, _systems, quiet="the table only, without what each system is missing"),
    Command("eval", "metrics card of a talking-head video (or of every video in a folder)",
            "VIDEO [-o CARD.json] [options]", _eval_arguments, _eval,
            quiet="folder mode: only the summary, not every video's card; no notes"),
    Command("bench", "run an engine over a fixed case set: metrics card, speed and memory per case",
            "[-o FOLDER] [options]", _bench_arguments, _bench, quiet="the table only: no progress or notes"),
    Command("preprocess", "turn a folder of talking videos into a training dataset", "VIDEOS -o DATASET [options]",
            _preprocess_arguments, _preprocess, quiet="no progress bar, skipped videos or summary"),
    Command("synth", "SynthTalk: render training videos with the warp engine and espeak-ng",
            "-o DATASET [options]", _synth_arguments, _synth, quiet="no progress bar or summary"),
    Command("train", "train a model stage from a YAML config (configs/train/)", "CONFIG [-o FOLDER] [options]",
            _train_arguments, _train, quiet="no progress bar or summary"),
    Command("prefer", "Hallo4 preference pairs for DPO, from human ratings or scored by the eval card",
            "{ratings CSV | generate PORTRAIT AUDIO...} [-o PAIRS.jsonl] [options]", _prefer_arguments, _prefer,
            quiet="no summary line"),
    Command("serve", "the HTTP API (FastAPI): jobs, files and a live stream; loopback unless --host", "[options]",
            _serve_arguments, _serve, quiet="log warnings and errors only", json=False),
    Command("web", "the Gradio web app (loopback only unless --host is given)", "[options]", _web_arguments, _web,
            quiet="log warnings and errors only", json=False),
)
BY_NAME = {c.name: c for c in COMMANDS}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, from COMMANDS; with `command` (the subcommand about to run, "" for none), heavy
    commands other than it get only their name and help line, so `--help` and `animate` stay fast."""
    p = _Parser(prog="talkinghead", description="Portrait + speech -> talking-head video, on a CPU.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    p.commands = {}
    for c in COMMANDS:
        sp = p.commands[c.name] = sub.add_parser(c.name, help=c.help, description=c.help,
                                                         usage=f"%(prog)s {c.shape}")
        if c.heavy and command not in (None, c.name):
            continue
        c.arguments(sp)
        sp.add_argument("--quiet", action="store_true", help=c.quiet)
        if c.json:
            sp.add_argument("--json", action="store_true", help=JSON_HELP)
    return p


def _version() -> str:
    from .. import __version__

    return __version__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {message}\n")


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # the top level has no options with values
    parser = build_parser(command)
    args = parser.parse_args(argv)
    _resolve_inputs(args, parser.commands[args.command])
    return BY_NAME[args.command].run(args)


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    try:
        code = run(argv)
    except InputError as e:  # a field's error names it as this interface does: its flag
        subject = "--" + e.field.replace("_", "-") if e.field else None
        sys.stderr.write(f"error: {e.text(subject)}" + (f"\n  how to fix: {e.hint}" if e.hint else "") + "\n")
        code = EXIT_USAGE
    except TalkingHeadError as e:
        sys.stderr.write(f"error: {e}\n")
        code = 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    except BrokenPipeError:  # the reader of stdout stopped early (`| head`): end quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
