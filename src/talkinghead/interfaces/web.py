"""`talkinghead web`: a Gradio app. Portrait + speech (uploaded, recorded or typed) -> talking-head video,
a contact sheet of its frames and the result's eval card. Loopback only by default; nothing leaves the machine.

The page is a thin skin over `talkinghead.api`: every control is a `config_from_options` option (the CLI
spelling), every user mistake is the library's own InputError shown as one message, and the render loop,
encoder and contact sheet are the api's (`animate` / `say` with `preview=`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..api import animate, say
from ..assets import SPEECH, portrait_path, speech_path
from ..config import AnimateConfig, ControlSpec, MotionConfig, RenderConfig, config_from_options
from ..config import controls as declared_controls
from ..errors import InputError, TalkingHeadError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: only this machine can reach the app unless the user says otherwise
DEFAULT_PORT = 7860
DEFAULT_VOICE = "en-us"
BUNDLED_PORTRAITS = {"astronaut": "astronaut", "grace hopper": "grace_hopper"}  # label -> assets name
HALLO_VARIANTS = ("hallo", "hallo2")  # engines that run an official release folder
MAX_UPLOAD = "200mb"
CACHE_SWEEP = (1800, 3600)  # s: every 30 min, delete Gradio's cached uploads/outputs older than 1 h
# System fonts only: the default theme would fetch Google Fonts, and these machines are often offline.
THEME = gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                          font_mono=("ui-monospace", "monospace"))


# The accordion each config section's controls go in.
SECTION_TITLES = {"motion": "Motion", "render": "Output", "diffusion": "Diffusion engines"}


def controls_of(section: str) -> list[ControlSpec]:
    """The controls declared for one config section, in declaration order."""
    return [spec for spec in declared_controls() if spec.section == section]


def shows(spec: ControlSpec) -> bool:
    """Whether the page offers a control: those a visitor may set, and files they upload (never folders or
    devices of the machine the app runs on)."""
    return spec.meta.client or spec.kind in ("path", "paths")


def control_component(spec: ControlSpec) -> gr.components.Component:
    """The component of one control declared in config.py: its range, choices, default and help."""
    m, common = spec.meta, {"label": spec.label, "info": spec.describe(), "elem_id": spec.flag}
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(spec.default), **common)
    if spec.kind in ("path", "paths"):
        common.pop("info")
        return gr.File(file_count="multiple" if spec.kind == "paths" else "single", type="filepath", **common)
    if m.choices:
        return gr.Radio(list(m.choices), value=spec.default, **common)
    if spec.kind in ("int", "float") and not spec.optional:
        lo, hi = m.range if m.range is not None else (None, None)
        if m.step is not None and hi is not None:
            return gr.Slider(lo, hi, value=spec.default, step=m.step, **common)
        return gr.Number(value=spec.default, precision=0 if (m.integer or spec.kind == "int") else None,
                         minimum=lo, maximum=hi, **common)
    # Optional numbers and free text are text boxes: an empty gr.Number reaches us as 0, not None;
    # config_from_options parses the text ("" -> None: the engine's own default) and names any mistake.
    return gr.Textbox("", placeholder="empty: the default", **common)


# ------------------------------------------------------------------------------------------ engines
def engine_status(checkpoint_dir: str | os.PathLike | None) -> dict[str, str | None]:
    """Every engine -> None when it can run, else why not (e.g. which release files `checkpoint_dir` lacks).
    Only checks that files are present, as the loaders do before reading them."""
    from ..models.checkpoints import find_file
    from ..systems.hallo.release import RELEASE_URL, release_files, release_root
    from ..systems import SYSTEMS, engine_names

    status: dict[str, str | None] = {}
    for name in engine_names():
        if SYSTEMS[name].weights == "none":
            status[name] = None
            continue
        if name not in HALLO_VARIANTS:
            status[name] = None if checkpoint_dir else "needs --checkpoint-dir with its weights folder"
            continue
        need = f"needs --checkpoint-dir with the official pretrained_models/ ({RELEASE_URL.format(variant=name)})"
        if checkpoint_dir is None:
            status[name] = need
            continue
        root = release_root(Path(checkpoint_dir))
        if not root.is_dir():
            status[name] = f"{need}; {checkpoint_dir} is not a folder"
            continue
        missing = [" or ".join(paths) for paths in release_files(name).values() if find_file(root, paths) is None]
        status[name] = f"{need} (missing: {'; '.join(missing)})" if missing else None
    return status


# ------------------------------------------------------------------------------------------ rendering
@dataclass
class Job:
    """One finished render: what the eval card needs, and the summary line shown above it."""

    video: Path
    sheet: Path
    image: str
    audio: str | None
    text: str | None
    summary: str = ""
    warnings: list[str] = field(default_factory=list)


def _redact(text: str, uploads: tuple) -> str:
    """Uploaded files named by their file name, not by where the server keeps them."""
    for path in uploads:
        if path:
            text = text.replace(str(path), Path(path).name)
    return text


def _user_error(e: TalkingHeadError, uploads: tuple = ()) -> gr.Error:
    """One line for the page: what is wrong (a control named by its label) and how to fix it (no traceback)."""
    if isinstance(e, InputError):
        what = e.text(e.field.replace("_", " ") + ":" if e.field else None)  # "head motion: must be ..."
        text = f"{what} — how to fix: {e.hint}" if e.hint else what
    else:
        text = str(e)
    return gr.Error(_redact(text, uploads), title="Cannot render", print_exception=False)


def _new_run_dir(workdir: Path) -> Path:
    """A fresh folder for one render; earlier renders of the session are removed (Gradio already copied
    their files to its cache when it sent them to the page)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("run-*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=workdir))


def _summary(video: Path, engine: str, config: AnimateConfig) -> str:
    """`talkinghead.mp4: 25 frames, 1.00 s at 25 fps, 128×128, engine warp; changed: head-motion 0.5`."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames, width, height = stream.frames, stream.codec_context.width, stream.codec_context.height
        seconds = float(container.duration / av.time_base) if container.duration else 0.0
    changed = []
    for ours, default in ((config.motion, MotionConfig()), (config.render, RenderConfig())):
        for name, value in vars(ours).items():
            if value != getattr(default, name):
                changed.append(f"{name.replace('_', '-')} {value:g}" if isinstance(value, float)
                               else f"{name.replace('_', '-')} {value}")
    line = (f"`{video.name}`: {frames} frames, {seconds:.2f} s at {config.render.fps:g} fps, {width}×{height}, "
            f"engine {engine}")
    return line + (f"; changed: {', '.join(changed)}" if changed else "; default controls")


def render(image: str | None, audio: str | None = None, text: str | None = "", voice: str = DEFAULT_VOICE,
           engine: str = "warp", options: dict | None = None, workdir: str | os.PathLike | None = None,
           checkpoint_dir: str | os.PathLike | None = None, progress=None) -> Job:
    """Render one video (+ contact sheet) into a fresh folder under `workdir`.

    `image`, `audio`: file paths (as Gradio hands uploads over). With audio, `text` is the transcript (sharper
    lips for English); without, `text` is spoken by espeak-ng `voice`. `options`: controls named like the CLI
    options. `workdir` defaults to a new temporary folder the caller owns; `progress` is a gr.Progress.
    A user mistake raises gr.Error carrying the InputError's message and fix; warnings the library gives
    (e.g. "several faces") are shown as gr.Warning."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = _render(image, audio, text, voice, engine, dict(options or {}),
                          Path(workdir or tempfile.mkdtemp(prefix="talkinghead-web-")), checkpoint_dir, progress)
    except TalkingHeadError as e:
        raise _user_error(e, (image, audio)) from None
    package = Path(__file__).resolve().parents[1]
    job.warnings = [_redact(str(w.message), (image, audio)) for w in caught
                    if issubclass(w.category, UserWarning) and Path(w.filename).resolve().is_relative_to(package)]
    for message in job.warnings:
        gr.Warning(message)
    return job


def _render(image, audio, text, voice, engine, options, workdir, checkpoint_dir, progress) -> Job:
    from ..systems import engine_names

    if engine not in engine_names():
        raise InputError(f"unknown engine {engine!r}", f"choose one of: {', '.join(engine_names())}")
    unavailable = engine_status(checkpoint_dir)[engine]
    if unavailable:
        raise InputError(f"engine {engine} is unavailable: {unavailable}", "choose the warp engine")
    if not image:
        raise InputError("no portrait", "upload a portrait photo or pick a bundled one (astronaut, grace hopper)")
    text = (text or "").strip()
    if not audio and not text:
        raise InputError("no speech", "upload or record audio, or type text to speak")
    from ..systems import SYSTEMS

    if checkpoint_dir is not None and SYSTEMS[engine].weights != "none":
        options.setdefault("checkpoint-dir", str(checkpoint_dir))
    config = config_from_options(options)
    run = _new_run_dir(workdir)
    video, sheet = run / "talkinghead.mp4", run / "frames.png"
    if progress is not None:
        progress(0.0, desc="reading the portrait and the speech")
    if audio:
        transcript = None
        if text:  # via a file: api.read_transcript would take typed text naming a file for a path to read
            transcript = run / "transcript.txt"
            transcript.write_text(text, encoding="utf-8")
        animate(image, audio, video, text=transcript, config=config, preview=sheet, progress=True, engine=engine)
    else:
        say(text, image, video, voice=voice, config=config, preview=sheet, progress=True, engine=engine)
    return Job(video, sheet, str(image), str(audio) if audio else None, text or None,
               _summary(video, engine, config))


def eval_card(job: Job) -> str:
    """The result's eval card as Markdown (under the summary line), or why there is none."""
    try:
        from ..eval.card import evaluate, format_table
    except ImportError as e:
        return f"{job.summary}\n\neval card unavailable: {e}"
    try:
        card = evaluate(str(job.video), audio=job.audio, ref=job.image, text=job.text)
        table = format_table(card)
    except Exception as e:  # noqa: BLE001 - the video is done; a failing measurement must not hide it
        log.exception("eval card failed for %s", job.video)
        return f"{job.summary}\n\neval card unavailable: {type(e).__name__}: {e}"
    return f"{job.summary}\n\n{table}"


def generate(image: str | None, audio: str | None = None, text: str | None = "", voice: str = DEFAULT_VOICE,
             engine: str = "warp", options: dict | None = None, workdir: str | os.PathLike | None = None,
             checkpoint_dir: str | os.PathLike | None = None, progress=None) -> tuple[str, str, str]:
    """Render and evaluate in one call: (video path, contact sheet path, eval card Markdown).
    The page runs the same two steps as separate events so the video shows before the card is done."""
    job = render(image, audio, text, voice, engine, options, workdir, checkpoint_dir, progress)
    return str(job.video), str(job.sheet), eval_card(job)


# ------------------------------------------------------------------------------------------ dubbing
def dub_video(video: str | None, audio: str | None, text: str | None = "", options: dict | None = None,
              workdir: str | os.PathLike | None = None, progress=None) -> tuple[str, str, str]:
    """Dub one video into a fresh folder under `workdir`: (dubbed mp4, contact sheet png, summary line).
    `options`: fit, face, face-index, keep-original-audio, mouth-scale as the page (or the CLI) names
    them, strings allowed. A user mistake raises gr.Error with the message and the fix."""
    from ..dub import DubOptions, dub

    uploads = (video, audio)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if not video:
                raise InputError("no video", "upload the video whose lips should follow the new speech")
            if not audio:
                raise InputError("no speech", "upload or record the new speech")
            o = {k.replace("_", "-"): v for k, v in (options or {}).items()}

            def number(name, kind=float):
                v = o.get(name)
                if v is None or str(v).strip() == "":
                    return None
                try:
                    x = float(v)
                except ValueError:
                    raise InputError(f"{name} needs a number, got {v!r}", f"e.g. {name} 1") from None
                if kind is int and not x.is_integer():
                    raise InputError(f"{name} needs a whole number, got {v!r}", "0 is the largest face")
                return kind(x)

            mouth = number("mouth-scale")
            opts = DubOptions(fit=o.get("fit") or "pingpong", face=o.get("face") or "largest",
                              face_index=number("face-index", int),
                              keep_original_audio=number("keep-original-audio"),
                              mouth_scale=1.0 if mouth is None else mouth)
            run = _new_run_dir(Path(workdir or tempfile.mkdtemp(prefix="talkinghead-web-")))
            out, sheet = run / "dubbed.mp4", run / "frames.png"
            transcript = None
            if (text or "").strip():
                transcript = run / "transcript.txt"
                transcript.write_text(text.strip(), encoding="utf-8")
            if progress is not None:
                progress(0.0, desc="reading the video and the speech")
            dub(video, audio, out, text=transcript, options=opts, preview=sheet, progress=True)
    except TalkingHeadError as e:
        raise _user_error(e, uploads) from None
    package = Path(__file__).resolve().parents[1]
    for w in caught:
        if issubclass(w.category, UserWarning) and Path(w.filename).resolve().is_relative_to(package):
            gr.Warning(_redact(str(w.message), uploads))
    import av

    with av.open(str(out)) as container:
        s = container.streams.video[0]
        frames, width, height = s.frames, s.codec_context.width, s.codec_context.height
        rate = float(s.average_rate or 0)
    summary = (f"`{out.name}`: {frames} frames at {rate:g} fps, {width}×{height}; fit {opts.fit}, "
               f"face {opts.face if opts.face_index is None else f'#{opts.face_index}'}")
    return str(out), str(sheet), summary


def _dub_tab(sessions) -> None:
    """The "Dub a video" tab: a video and new speech in, the video with re-synced lips out."""
    from ..dub import FACES, FITS

    gr.Markdown("Re-sync the lips of the person in a video to new speech. Only the mouth region changes; "
                "every other pixel is the video's own.")
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video to dub", sources=["upload"], elem_id="dub-video")
            audio = gr.Audio(label="New speech", sources=["upload", "microphone"], type="filepath",
                             elem_id="dub-speech")
            text = gr.Textbox(label="Text", lines=2, elem_id="dub-text",
                              info="Optional: the words of the new speech (English), so the lips follow every sound.")
            fit = gr.Radio(list(FITS), value="pingpong", label="fit", elem_id="dub-fit",
                           info="speech longer than the video: play it back and forth, loop, or hold the last "
                                "frame; trim: stop at whichever ends first")
            face = gr.Radio(list(FACES), value="largest", label="face", elem_id="dub-face",
                            info="which face: the largest, or the one whose lips move most")
            face_index = gr.Textbox("", label="face index", placeholder="empty: as chosen above",
                                    elem_id="dub-face-index", info="the N-th face by size (0 = largest)")
            mix = gr.Textbox("", label="keep original audio (dB)", placeholder="empty: the new speech only",
                             elem_id="dub-keep-original-audio", info="e.g. -18: the video's sound 18 dB under")
            mouth = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="mouth scale", elem_id="dub-mouth-scale")
            button = gr.Button("Dub", variant="primary", elem_id="dub")
        with gr.Column(scale=1):
            result = gr.Video(label="Dubbed", elem_id="dub-result", interactive=False, autoplay=False)
            sheet = gr.Image(label="Frames", type="filepath", elem_id="dub-sheet", interactive=False)
            summary = gr.Markdown("", elem_id="dub-summary")

    def on_dub(v, a, t, f, fc, fi, mx, ms, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Dub button."""
        options = {"fit": f, "face": fc, "face-index": fi, "keep-original-audio": mx, "mouth-scale": ms}
        return dub_video(v, a, t, options, sessions.folder(request) / "dub", progress)

    button.click(on_dub, [video, audio, text, fit, face, face_index, mix, mouth], [result, sheet, summary])


# ------------------------------------------------------------------------------------------ the page
class _Sessions:
    """Per-browser-session output folders under one temporary root, removed when the tab closes and
    (the root) when the app is garbage-collected or the process exits."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="talkinghead-web-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def folder(self, request: gr.Request | None) -> Path:
        """The session's output folder."""
        return self.root / ((request and request.session_hash) or "default")

    def drop(self, request: gr.Request) -> None:
        """Delete a closed session's outputs."""
        shutil.rmtree(self.folder(request), ignore_errors=True)


def _voices() -> list[str]:
    from ..audio.tts import list_voices

    return list_voices()


def _engine_choices(status: dict[str, str | None]) -> list[tuple[str, str]]:
    return [(name if why is None else f"{name} (unavailable)", name) for name, why in status.items()]


def _engine_notes(status: dict[str, str | None]) -> str:
    return "\n".join(f"- **{name}**: {'available' if why is None else why}" for name, why in status.items())


def build_app(checkpoint_dir: str | os.PathLike | None = None) -> gr.Blocks:
    """The Gradio page. `checkpoint_dir`: the official release folder the hallo engines load."""
    status = engine_status(checkpoint_dir)
    sessions = _Sessions()
    with gr.Blocks(title="talkinghead", analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown("# talkinghead\nA portrait and speech become a talking-head video, rendered on this machine.")
        with gr.Tabs():
            with gr.Tab("Animate a photo", elem_id="animate-tab"):
                with gr.Row():
                    with gr.Column(scale=1):
                        # image_mode=None: Gradio hands over the uploaded file itself and our loader reads it
                        image = gr.Image(label="Portrait", type="filepath", image_mode=None, elem_id="portrait",
                                         sources=["upload", "clipboard"], height=320)
                        gr.Examples([[str(portrait_path(name))] for name in BUNDLED_PORTRAITS.values()], [image],
                                    label="Bundled portraits: " + ", ".join(BUNDLED_PORTRAITS))
                        audio = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath",
                                         elem_id="speech")
                        text = gr.Textbox(label="Text", lines=2, elem_id="text", placeholder="Hello! I am a talking head.",
                                          info="Without audio: spoken by the voice below. With audio: the words spoken "
                                               "(English), so the lips follow every sound.")
                        voice = gr.Dropdown(_voices(), value=DEFAULT_VOICE, label="Voice (language)", elem_id="voice",
                                            info="espeak-ng, used when there is no audio")
                        clip, words = speech_path(next(iter(SPEECH)))
                        gr.Examples([[str(clip), words]], [audio, text], label="Bundled speech (LibriVox, public domain)")
                        engine = gr.Radio(_engine_choices(status), value="warp", label="Engine", elem_id="engine")
                        gr.Markdown(_engine_notes(status), elem_id="engine-status")
                        button = gr.Button("Generate", variant="primary", elem_id="generate")
                        controls: dict[str, gr.components.Component] = {}
                        for section, title in SECTION_TITLES.items():
                            with gr.Accordion(title, open=section != "diffusion"):
                                for spec in controls_of(section):
                                    if shows(spec):
                                        controls[spec.flag] = control_component(spec)
                    with gr.Column(scale=1):
                        video = gr.Video(label="Result", elem_id="result", interactive=False, autoplay=False)
                        sheet = gr.Image(label="Frames", type="filepath", elem_id="sheet", interactive=False)
                        card = gr.Markdown("Generate a video to see its eval card here.", elem_id="card")
            with gr.Tab("Dub a video", elem_id="dub-tab"):
                _dub_tab(sessions)
        job_state = gr.State()
        inputs = {image, audio, text, voice, engine, *controls.values()}

        def on_generate(values: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            """Generate button: the video and its contact sheet; the card follows in `on_card`."""
            options = {name: values[c] for name, c in controls.items() if values[c] is not None}
            job = render(values[image], values[audio], values[text], values[voice], values[engine], options,
                         sessions.folder(request), checkpoint_dir, progress)
            return str(job.video), str(job.sheet), job.summary + "\n\ncomputing the eval card…", job

        def on_card(job: Job | None) -> str:
            """After the video shows: the eval card."""
            return eval_card(job) if job is not None else gr.skip()

        button.click(on_generate, inputs, [video, sheet, card, job_state]).success(on_card, job_state, card)
        demo.unload(sessions.drop)
    demo.sessions = sessions  # tests and callers can find the output root
    return demo


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, checkpoint_dir: str | os.PathLike | None = None,
           share: bool = False, block: bool = True) -> gr.Blocks:
    """Serve the app on host:port (loopback unless told otherwise), without analytics. Blocks until
    interrupted unless `block=False` (then returns the running app; `.close()` stops it)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry or version checks: often offline
    demo = build_app(checkpoint_dir)
    demo.queue(default_concurrency_limit=1)  # one render at a time: it uses every core
    # show_error: an unexpected failure shows its one-line message in the page (never a traceback)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
                max_file_size=MAX_UPLOAD, theme=THEME, show_error=True)
    return demo


__all__ = ["build_app", "dub_video", "engine_status", "eval_card", "generate", "launch", "render"]
