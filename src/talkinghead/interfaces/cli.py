"""Command line: `talkinghead animate | say | dub | demo | voices | verify | systems | eval | bench | preprocess | synth
| train | web | serve`.

Every control declared in config.py is an option named after it (`head_motion` -> --head-motion).
A user mistake prints one message with the fix and exits with code 2, leaving no output file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import MISSING, fields
from pathlib import Path

from ..config import AnimateConfig, DiffusionConfig
from ..errors import InputError, TalkingHeadError
from ..systems import engine_names, verifier_names

EXIT_USAGE = 2
DEMO_TEXT = ("Hello! I am a talking head, made from a single photo on your own computer. "
             "No downloads, no graphics card, just press play.")



class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line + the fix, exit 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n  how to fix: see `{self.prog} --help`\n")
        raise SystemExit(EXIT_USAGE)


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command` (the subcommand about to run, "" for none), subcommands whose options
    would import heavy packages get only their name and help line, so `--help` and `animate` stay fast."""
    p = _Parser(prog="talkinghead", description="Portrait + speech -> talking-head video, on a CPU.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    a = sub.add_parser("animate", help="animate a portrait with recorded speech")
    a.add_argument("--image", required=True, help="portrait photo (jpg, png, webp, ...)")
    a.add_argument("--audio", required=True, help="speech (wav, mp3, flac, ogg, m4a, or a video's audio)")
    a.add_argument("--text", help="the words spoken (text or a .txt file): sharper lip-sync for English")
    _common(a)

    s = sub.add_parser("say", help="speak typed text with espeak-ng and animate a portrait")
    s.add_argument("text", help="what to say")
    s.add_argument("--image", required=True, help="portrait photo")
    s.add_argument("--voice", default="en-us", help="espeak-ng voice / language, e.g. en-us, de, fr, cmn "
                                                    "(`talkinghead voices` lists them)")
    _common(s)

    _add_dub_parser(sub, options=command in (None, "dub"))

    d = sub.add_parser("demo", help="render a demo video from a bundled portrait and generated speech")
    d.add_argument("-o", "--output", default="demo.mp4", help="output mp4 (default demo.mp4)")
    d.add_argument("--preview", help="also write a contact sheet of frames (png)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    sub.add_parser("voices", help="list espeak-ng voices for `say --voice`")

    v = sub.add_parser("verify", help="compare our modules with reference data made by the official code")
    v.add_argument("model", choices=verifier_names(), help="which system's reference data format")
    v.add_argument("fixture_dir", help="reference-data folder made by running the official code (tiny config)")

    sm = sub.add_parser("systems", help="list every system: what it can do here (render, train, verify) and what "
                                        "is missing")
    sm.add_argument("--json", action="store_true", help="print the registry as JSON")
    sm.add_argument("--quiet", action="store_true", help="the table only, without what each system is missing")

    e = sub.add_parser("eval", help="metrics card of a talking-head video (or of every video in a folder)")
    e.add_argument("video", help="a video, or a folder of videos (a same-named .txt beside each is its transcript)")
    e.add_argument("--audio", help="judge against this speech instead of the video's own audio track")
    e.add_argument("--ref", help="the portrait the video was made from (a folder of them, named like the "
                                 "videos, in folder mode): identity, background and mouth sharpness")
    e.add_argument("--text", help="the words spoken (text or .txt): bilabial closure and open vowels")
    e.add_argument("--real", help="folder mode: real frames or videos to compute FID/KID against")
    e.add_argument("--json", help="also write the card as JSON to this file")
    e.add_argument("--plot", help="single video: PNG of mouth aperture vs audio envelope and correlation vs lag")

    b = sub.add_parser("bench", help="run an engine over a fixed case set: metrics card, speed and memory per case")
    b.add_argument("--cases", help="folder of portraits and speech clips (+ .txt transcripts); "
                                   "default: 2 bundled portraits x 2 LibriVox clips")
    b.add_argument("-o", "--output", default=None, help="folder for videos and the tables (default bench-ENGINE)")
    _add_engine_options(b)

    pp = sub.add_parser("preprocess", help="turn a folder of talking videos into a training dataset")
    pp.add_argument("videos", help="folder of videos (mp4, mov, mkv, webm, avi)")
    pp.add_argument("dataset", help="output dataset folder (resumable: rerun to continue)")
    pp.add_argument("--size", type=_number(int, "--size"), default=512, help="face crop side in pixels (default 512)")
    pp.add_argument("--workers", type=_number(int, "--workers"), default=2, help="parallel processes (default 2)")
    pp.add_argument("--audio-model", help="local wav2vec2 or whisper folder: also store its features")
    pp.add_argument("--body", action="store_true", help="also store hand and body keypoints (MediaPipe Hands + "
                                                        "Pose), which EMO2 trains on")

    sy = sub.add_parser("synth", help="SynthTalk: render training videos with the warp engine and espeak-ng")
    sy.add_argument("dataset", help="output folder for NAME.mp4 + NAME.json (true phoneme timings)")
    sy.add_argument("--clips", type=_number(int, "--clips"), default=20, help="how many clips (default 20)")
    sy.add_argument("--size", type=_number(int, "--size"), default=256, help="video side in pixels (default 256)")
    sy.add_argument("--seed", type=_number(int, "--seed"), default=0, help="random seed (default 0)")

    tr = sub.add_parser("train", help="train a model stage from a YAML config (configs/train/)")
    tr.add_argument("--config", required=True, help="e.g. configs/train/emo_stage1.yaml")
    tr.add_argument("--dataset", help="override the config's dataset folder")
    tr.add_argument("--output-dir", help="override the config's output folder")
    tr.add_argument("--max-steps", type=_number(int, "--max-steps"), help="override the config's max_steps")
    tr.add_argument("--no-resume", action="store_true", help="start over even if output-dir has checkpoints")
    tr.add_argument("--smoke", action="store_true",
                    help="check the config: two steps of its system's tiny variant on a generated dataset, in a "
                         "temporary folder (or --output-dir)")

    se = sub.add_parser("serve", help="the HTTP API (FastAPI): jobs, files and a live stream; loopback unless --host")
    _add_server_options(se)

    w = sub.add_parser("web", help="the Gradio web app (loopback only unless --host is given)")
    w.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    w.add_argument("--port", type=_number(int, "--port"), default=7860, help="port (default 7860)")
    w.add_argument("--checkpoint-dir", help="official release folder, to offer the hallo/hallo2 engines")
    w.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    return p


def _add_server_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info)")


def _common(p) -> None:
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    p.add_argument("--preview", help="also write a contact sheet of frames (png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--audio-bitrate", metavar="KBPS",
                   help="AAC bit rate of the video's sound in kb/s, e.g. 192 or 192k (default: transparent, "
                        "96 per channel; the sound keeps the input's sample rate and channels)")
    _add_controls(p, ("motion", "render"))
    _add_engine_options(p)


def _add_dub_parser(sub, options: bool = True) -> None:
    """`talkinghead dub`: re-sync the lips of a face in a video to new speech. Its options come from the
    dub package (video decoding, tracking, OpenCV): `options=False` adds the command's help line only."""
    p = sub.add_parser("dub", help="re-sync the lips of the face in a video to new speech (dubbing)")
    if not options:
        return
    from ..dub.pipeline import FITS, MIX_RANGE

    p.add_argument("--video", required=True, help="the video to dub (mp4, mov, mkv, webm, ...)")
    p.add_argument("--audio", required=True, help="the new speech (wav, mp3, flac, ogg, m4a, or a video's audio)")
    p.add_argument("--text", help="the words spoken (text or a .txt file): sharper lip-sync for English")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
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
    p.add_argument("--preview", help="also write a contact sheet of frames (png)")
    p.add_argument("--audio-bitrate", metavar="KBPS", help="AAC bit rate of the sound in kb/s (default: transparent)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _dub(args) -> int:
    from ..dub import DubOptions, dub

    t0 = time.perf_counter()
    options = DubOptions(fit=args.fit, face=args.face, face_index=args.face_index,
                         keep_original_audio=args.keep_original_audio, max_seconds=args.max_seconds,
                         mouth_scale=args.mouth_scale)
    out = dub(args.video, args.audio, args.output, text=args.text, options=options, preview=args.preview,
              progress=not args.quiet, audio_bitrate=args.audio_bitrate)
    if not args.quiet:
        _summary(Path(out), time.perf_counter() - t0)
    return 0


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and the diffusion engines' controls."""
    g = p.add_argument_group(*GROUPS["diffusion"])
    g.add_argument("--engine", default="warp", choices=engine_names(), help="which engine renders")
    _add_controls(p, ("diffusion",), {"diffusion": g})


def _version() -> str:
    from .. import __version__

    return __version__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {message}\n")


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # the top level has no options with values
    args = build_parser(command).parse_args(argv)
    progress = not getattr(args, "quiet", False)
    t0 = time.perf_counter()
    if args.command == "dub":
        return _dub(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "systems":
        return _systems(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "preprocess":
        return _preprocess(args)
    if args.command == "synth":
        from ..train.synth import synth

        paths = synth(args.dataset, clips=args.clips, size=args.size, seed=args.seed)
        print(f"wrote {len(paths)} clips to {args.dataset}", file=sys.stderr)
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "serve":
        from .server import serve
        from .settings import Settings

        serve(log_level=args.log_level, **{f.name: getattr(args, f.name) for f in fields(Settings)})
        return 0
    if args.command == "web":
        from .web import launch

        try:
            launch(host=args.host, port=args.port, checkpoint_dir=args.checkpoint_dir, share=args.share)
        except OSError as e:  # port taken, address not on this machine
            raise InputError(f"cannot listen on {args.host}:{args.port}: {e}", "choose another --port or --host") from None
        return 0
    if args.command == "voices":
        from ..audio.tts import list_voices

        print("\n".join(list_voices()))
        return 0
    from .. import api

    if args.command == "animate":
        out = api.animate(args.image, args.audio, args.output, text=args.text, config=_config(args),
                          preview=args.preview, progress=progress, engine=args.engine,
                          audio_bitrate=args.audio_bitrate)
    elif args.command == "say":
        out = api.say(args.text, args.image, args.output, voice=args.voice, config=_config(args),
                      preview=args.preview, progress=progress, engine=args.engine,
                      audio_bitrate=args.audio_bitrate)
    else:  # demo
        from ..assets import portrait

        out = api.say(DEMO_TEXT, portrait("astronaut"), args.output, voice="en-us",
                      preview=args.preview, progress=progress)
    if progress:
        _summary(Path(out), time.perf_counter() - t0)
    return 0


def _verify(args) -> int:
    """Print one line per compared output; exit 1 if any is above its tolerance."""
    from ..systems import get, resolve

    fixture = Path(args.fixture_dir)
    if not fixture.is_dir():
        raise InputError(f"reference-data folder {fixture} does not exist",
                         f"pass the folder made by running the official {args.model} code")
    checks = resolve(get(args.model).verifier)(fixture)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)}/{len(checks)} outputs within tolerance")
    return 1 if failed else 0


def _systems(args) -> int:
    """The registry as a table (or JSON): what each system can do here and what is missing."""
    import json

    from ..systems import CAPABILITIES, SYSTEMS

    rows = [s.to_dict() for s in SYSTEMS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'system':<12} {'family':<15} {'weights':<9} " + " ".join(f"{c:<7}" for c in CAPABILITIES))
    for r in rows:
        print(f"{r['name']:<12} {r['family']:<15} {r['weights']:<9} "
              + " ".join(f"{'yes' if r[c] else '-':<7}" for c in CAPABILITIES))
    if not getattr(args, "quiet", False):
        print()
        for r in rows:
            for gap in r["missing"]:
                print(f"{r['name']}: {gap}")
    return 0


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


def _eval(args) -> int:
    """Print the card as a table; optionally write JSON and a plot."""
    from ..eval import card as C

    _writable(args.json, (".json",), "--json")
    _writable(args.plot, (".png",), "--plot")
    target = Path(args.video)
    if not target.exists():
        raise InputError(f"{target} does not exist", "pass a video file or a folder of videos")
    if target.is_dir():
        if args.audio or args.plot or args.text:
            raise InputError("--audio, --text and --plot apply to a single video",
                             "in folder mode put NAME.txt transcripts beside the videos and use the videos' own audio")
        result = C.evaluate_folder(target, ref=args.ref, real=args.real)
        for card in result["videos"]:
            print(C.format_table(card) + "\n")
        print(C.format_table({"video": f"{target} (mean of {len(result['videos'])} videos)", **result["summary"]}))
        dist = result["distribution"]
        print("\ndistribution: " + ", ".join(f"{k} {C._fmt(v)}" for k, v in dist.items() if k != "missing")
              + "".join(f"\n  {k}: {why}" for k, why in dist["missing"].items()))
    else:
        if args.real:
            raise InputError("--real applies to folder mode", "pass a folder of videos to compare with real footage")
        result, series = C.evaluate_with_series(target, audio=args.audio, ref=args.ref, text=args.text)
        print(C.format_table(result))
        if args.plot:
            C.plot(series, result, args.plot)
    if args.json:
        C.write_json(result, args.json)
    return 0


def _bench(args) -> int:
    """Render every case with one engine; print the Markdown table."""
    from ..eval import bench

    cases = bench.load_cases(args.cases) if args.cases else bench.default_cases()
    diffusion = {f.name: getattr(args, f.name) for f in fields(DiffusionConfig)}
    out = Path(args.output or f"bench-{args.engine}")
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file", "pass a folder for the bench results")
    rows = bench.run(args.engine, cases, out, {"diffusion": diffusion},
                     progress=lambda m: print(m, file=sys.stderr))
    print(bench.to_markdown(rows))
    print(f"wrote {out / 'bench.md'}, {out / 'bench.csv'} and {out / 'cards.json'}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


def _preprocess(args) -> int:
    """Preprocess a folder of videos; print what was skipped and why."""
    from ..train.preprocess import preprocess

    report = preprocess(args.videos, args.dataset, size=args.size, workers=args.workers, audio_model=args.audio_model,
                        body=args.body)
    for source, reason in report.skipped:
        print(f"skipped {source}: {reason}", file=sys.stderr)
    print(f"{len(report.processed)} videos in {args.dataset}, {len(report.skipped)} skipped", file=sys.stderr)
    return 0 if report.processed else 1


def _train(args) -> int:
    """Train one stage (resuming from the latest checkpoint in the output folder)."""
    from ..train.trainer import TrainConfig, train

    if args.smoke:
        from ..train.smoke import smoke_train

        trainer = smoke_train(TrainConfig.from_yaml(args.config), args.output_dir)
        print(f"smoke run of {args.config} passed: {trainer.step} steps of the tiny variant, losses "
              + ", ".join(f"{r['loss']:.4g}" for r in trainer.history), file=sys.stderr)
        return 0
    overrides = {k: v for k, v in (("dataset", args.dataset), ("output_dir", args.output_dir),
                                   ("max_steps", args.max_steps)) if v is not None}
    trainer = train(TrainConfig.from_yaml(args.config, overrides), resume=not args.no_resume)
    last = trainer.history[-1]["loss"] if trainer.history else float("nan")
    print(f"trained to step {trainer.step} (loss {last:.4g}); checkpoints in {trainer.out / 'checkpoints'}",
          file=sys.stderr)
    return 0


def _summary(path: Path, seconds: float) -> None:
    from ..io import probe

    info = probe(path, decode=False)  # headers only: decoding the whole video again would cost seconds
    dur = info.get("video_duration") or 0.0
    print(f"wrote {path} ({info['width']}x{info['height']}, {info['n_frames']} frames, {dur:.1f} s) "
          f"in {seconds:.1f} s — {dur / max(seconds, 1e-9):.1f}x real time", file=sys.stderr)


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
    raise SystemExit(code)


if __name__ == "__main__":
    main()
