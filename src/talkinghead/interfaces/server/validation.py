"""Submissions checked before they are queued, so that a 202 means the job will render: the controls (as
declared in config.py, less the operator's), the image (decoded, a face found), the speech (decoded or spoken,
within the limits) and, for dubbing, the video. Anything wrong is a ServiceError (422) naming its field."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...config import AnimateConfig, config_from_options, controls
from ...errors import InputError, TooLongError
from ..settings import Settings
from .errors import ServiceError, refusal
from .schemas import DUB_FILES, MAX_TEXT_CHARS, dub_form
from .uploads import Upload


@dataclass
class RenderRequest:
    """One validated submission: everything a render thread needs."""

    engine: str
    config: AnimateConfig
    image: Path
    audio: Path | None  # None: speak `text` with espeak-ng
    text: str | None  # the words to speak, or the transcript of `audio`
    voice: str = "en-us"
    labels: dict[str, str] = field(default_factory=dict)  # server path -> the name the client knows


@dataclass
class DubRequest:
    """One validated dubbing submission (POST /v1/dubs): the video, the new speech, its options."""

    video: Path
    audio: Path
    text: str | None  # the transcript of `audio`
    options: object  # talkinghead.dub.DubOptions, validated
    labels: dict[str, str] = field(default_factory=dict)  # server path -> the name the client knows


def client_config(options: dict, settings: Settings, engine: str) -> AnimateConfig:
    """An AnimateConfig from a client's controls (named like the CLI options), with the operator's
    engine settings filled in; ServiceError 422 for anything wrong or not the client's to set."""
    from ...systems import SYSTEMS, check_controls, engine_names

    operator_only = {spec.flag for spec in controls() if not spec.meta.client}  # paths and devices
    for name in options:
        key = name.replace("_", "-")
        if key in operator_only:
            raise ServiceError("option_not_allowed", f"{key!r} is set by the server's operator, not per request\n"
                               f"  how to fix: leave {key!r} out", field=key)
    if engine not in engine_names():
        raise ServiceError("invalid_option", f"unknown engine {engine!r}\n"
                           f"  how to fix: choose one of: {', '.join(engine_names())}", field="engine")
    if engine != "warp" and not settings.checkpoint_dir:
        raise ServiceError("engine_unavailable", f"this server has no checkpoints for the {engine} engine\n"
                           "  how to fix: use engine=warp, or ask the operator to start it with checkpoints",
                           field="engine")
    try:
        config = config_from_options(options)
        check_controls(SYSTEMS[engine], config)  # a control the engine cannot honour is the client's mistake
    except InputError as e:
        raise refusal(e, "option") from None
    cap = settings.max_audio_seconds
    given = any(n.replace("_", "-") == "max-seconds" for n in options)
    config.render.max_seconds = min(config.render.max_seconds, cap) if given else cap
    if SYSTEMS[engine].weights != "none":  # the operator's weights, for the engines that run from them
        config.diffusion.checkpoint_dir = settings.checkpoint_dir
        config.diffusion.face_embedding = settings.face_embedding
    return config


def _over_the_cap(what: str, name: str, cap: float) -> ServiceError:
    """422: speech (the form field `name`) over this server's own limit, not the client's smaller max-seconds."""
    return ServiceError("audio_too_long", f"{what} is longer than this server's limit of {cap:g} s\n"
                        f"  how to fix: send at most {cap:g} s of speech", field=name)


def check_speech(request: RenderRequest, settings: Settings) -> None:
    """Decode the audio (or speak the text) once, as the render will: 422 for bad or too-long speech."""
    from ...io import load_audio
    from ...service import spoken

    limit = request.config.render.max_seconds
    checking = "text" if request.audio is None else "audio"
    try:
        if request.audio is None:
            spoken(request.text, request.voice, limit)
        else:
            load_audio(request.audio, max_seconds=limit)
    except TooLongError as e:
        if limit < settings.max_audio_seconds:  # the client's own, smaller max-seconds
            raise refusal(e, checking, request.labels) from None
        what = "the speech" if request.audio is None else f"the audio {request.labels[str(request.audio)]}"
        raise _over_the_cap(what, checking, limit) from None
    except InputError as e:
        raise refusal(e, checking, request.labels) from None


def _text(text: str | None) -> str | None:
    """The words to speak or align, whitespace tidied; ServiceError when empty or too long."""
    if text is None:
        return None
    if len(text) > MAX_TEXT_CHARS:
        raise ServiceError("invalid_text", f"`text` is longer than {MAX_TEXT_CHARS} characters\n"
                           "  how to fix: split it into several videos", field="text")
    text = " ".join(text.split())
    if not text:
        raise ServiceError("invalid_text", "`text` is empty\n  how to fix: give the words to speak "
                           "(or, with audio, the words spoken), or leave `text` out", field="text")
    return text


def check_warp_portrait(source, face) -> None:
    """The warp engine's refusals of a portrait, made here so that a 202 means the job renders: a mouth too
    wide open to close (the face rig's check, on the prepared face) and a tongue out over the lower lip
    (judged on the source photo, as the engine judges it). A few milliseconds: landmarks are already found."""
    from ...face.mouth_state import refuse_tongue_out
    from ...render.rig import FaceRig

    FaceRig(face)
    refuse_tongue_out(source.image, face.source_landmarks)


def validate_submission(upload: Upload, settings: Settings) -> RenderRequest:
    """POST /v1/videos checked: the options, the image (decoded, a face found at the output geometry, and for
    the warp engine a mouth it can animate) and the speech (decoded or spoken)."""
    from ...face import prepare
    from ...io import load_image

    options = dict(upload.fields)
    engine = options.pop("engine", "warp").strip() or "warp"
    text = _text(options.pop("text", None))
    voice = options.pop("voice", "en-us").strip() or "en-us"
    config = client_config(options, settings, engine)
    if "image" not in upload.files:
        raise ServiceError("missing_image", "no `image` file in the form\n"
                           "  how to fix: send the portrait as the file field `image`", field="image")
    audio = upload.files.get("audio")
    if audio is None and text is None:
        raise ServiceError("missing_audio", "no `audio` file and no `text`\n"
                           "  how to fix: send speech as the file field `audio`, or words to speak as `text`",
                           field="audio")
    labels = {str(upload.files[k]): upload.filenames[k] for k in upload.files}
    request = RenderRequest(engine, config, upload.files["image"], audio, text, voice, labels)
    try:
        r = config.render
        source = load_image(request.image)
        _, face = prepare(source, r.size, r.crop if engine == "warp" else "face", r.face_index, warn=False)
        if engine == "warp":
            check_warp_portrait(source, face)
    except InputError as e:
        raise refusal(e, "image", labels) from None
    check_speech(request, settings)
    return request


def _number(fields: dict[str, str], name: str, integer: bool = False) -> float | int | None:
    """A dubbing form's numeric field (None when absent or empty); ServiceError when it is not a number."""
    v = fields.get(name)
    if v is None or v.strip() == "":
        return None
    try:
        x = float(v)
    except ValueError:
        raise ServiceError("invalid_option", f"{name} needs a number, got {v!r}\n  how to fix: e.g. {name}=1",
                           field=name) from None
    if not integer:
        return x
    if not x.is_integer():
        raise ServiceError("invalid_option", f"{name} needs a whole number, got {v!r}\n  how to fix: e.g. {name}=0",
                           field=name)
    return int(x)


def dub_options(fields: dict[str, str], settings: Settings):
    """The DubOptions a dubbing form asks for, validated, its max-seconds capped at the server's limit."""
    from ...dub import DubOptions

    allowed = [name for name in dub_form()["properties"] if name not in DUB_FILES]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ServiceError("invalid_option", f"unknown option(s) {', '.join(unknown)}\n"
                           f"  how to fix: use only {', '.join(allowed)}", field=unknown[0])
    cap, asked, mouth = settings.max_audio_seconds, _number(fields, "max-seconds"), _number(fields, "mouth-scale")
    options = DubOptions(fit=fields.get("fit", "pingpong").strip() or "pingpong",
                         face=fields.get("face", "largest").strip() or "largest",
                         face_index=_number(fields, "face-index", integer=True),
                         keep_original_audio=_number(fields, "keep-original-audio"),
                         max_seconds=cap if asked is None else min(asked, cap),
                         mouth_scale=1.0 if mouth is None else mouth)
    try:
        return options.validate()
    except InputError as e:
        raise refusal(e, "option") from None


def validate_dub(upload: Upload, settings: Settings) -> DubRequest:
    """POST /v1/dubs checked: the options, the video (decoded, within the length limit) and the speech.
    Whether a face is in the video is known only once it is tracked, so that fails the job, not the submission."""
    from ...dub import VideoSource
    from ...io import load_audio

    fields = {k.replace("_", "-"): v for k, v in upload.fields.items()}
    text = fields.pop("text", None)
    options = dub_options(fields, settings)
    for name, what in (("video", "the video to dub"), ("audio", "the new speech")):
        if name not in upload.files:
            raise ServiceError(f"missing_{name}", f"no `{name}` file in the form\n"
                               f"  how to fix: send {what} as the file field `{name}`", field=name)
    if text is not None:
        text = " ".join(text.split())[:MAX_TEXT_CHARS] or None
    labels = {str(upload.files[k]): upload.filenames[k] for k in upload.files}
    video, audio = upload.files["video"], upload.files["audio"]
    try:
        VideoSource(video, options.max_seconds)
    except InputError as e:
        raise refusal(e, "video", labels) from None
    except (ValueError, TypeError, AttributeError, OSError):  # a decoder's own error on a broken file
        raise ServiceError("invalid_video", f"cannot read the video {upload.filenames['video']}\n"
                           "  how to fix: send a complete video file (mp4, mov, mkv, webm)", field="video") from None
    try:
        load_audio(audio, max_seconds=options.max_seconds)
    except InputError as e:
        raise refusal(e, "audio", labels) from None
    return DubRequest(video, audio, text, options, labels)
