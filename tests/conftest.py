"""Shared fixtures: real portraits and real speech, loaded once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkinghead.assets import portrait, speech_path
from talkinghead.io import load_audio
from talkinghead.types import Portrait, Speech
from tests.support import fixture


@pytest.fixture(scope="session")
def astronaut() -> Portrait:
    return Portrait(portrait("astronaut"), "astronaut")


@pytest.fixture(scope="session")
def grace() -> Portrait:
    return Portrait(portrait("grace_hopper"), "grace_hopper")


@pytest.fixture(scope="session")
def librivox() -> tuple[Speech, str]:
    """7.1 s of real read English speech and its transcript."""
    wav, text = speech_path("librivox_0870")
    return load_audio(wav), text


@pytest.fixture(scope="session")
def silence() -> Speech:
    return Speech(np.zeros(16000 * 3, np.float32))


@pytest.fixture(scope="session")
def hallo_dir() -> Path:
    """FIXTURES/hallo: reference data made by the official Hallo code."""
    return fixture("hallo")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every model in the tests is tiny: one intra-op thread runs them fastest, and two threads stall in
    OpenMP barriers whenever another process shares the two cores (measured: a 2 s training step took 10-60 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hallo_release(hallo_dir, tmp_path_factory) -> Path:
    """A tiny release folder in the official layout, weights from the shared reference data:
    pretrained_models/{hallo,hallo2}/net.pth + config.json, sd-vae-ft-mse/, wav2vec/wav2vec2-base-960h/."""
    import json
    import shutil

    from talkinghead.systems.hallo.model import HalloConfig

    root = tmp_path_factory.mktemp("release") / "pretrained_models"
    net, audio = hallo_dir / "hallo_tiny", hallo_dir / "hallo_audio_tiny"
    fixture_config = json.loads((net / "config.json").read_text())
    for variant in ("hallo", "hallo2"):
        (root / variant).mkdir(parents=True)
        shutil.copy(net / "net.pth", root / variant / "net.pth")
        (root / variant / "config.json").write_text(
            json.dumps(HalloConfig.from_reference_run(fixture_config).to_dict()))
    vae = root / "sd-vae-ft-mse"
    vae.mkdir()
    shutil.copy(net / "vae_tiny.safetensors", vae / "diffusion_pytorch_model.safetensors")
    (vae / "config.json").write_text(json.dumps(fixture_config["vae_constructor_kwargs"]))
    w2v = root / "wav2vec" / "wav2vec2-base-960h"
    w2v.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(audio / name, w2v / name)
    return root


@pytest.fixture(scope="session")
def face_embedding_file(tmp_path_factory) -> Path:
    """A 512-d identity vector file, as `--face-embedding` takes."""
    path = tmp_path_factory.mktemp("emb") / "face.npy"
    np.save(path, np.random.default_rng(0).normal(size=512).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def short_wav(librivox, tmp_path_factory) -> Path:
    """0.9 s of real speech as a 16 kHz wav file: 23 frames at 25 fps, two 16-frame clips for the diffusion engines."""
    import wave

    speech, _ = librivox
    path = tmp_path_factory.mktemp("wav") / "short.wav"
    pcm = (np.clip(speech.samples[: int(0.9 * speech.sample_rate)], -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(speech.sample_rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="session")
def skyreels_a1_release(tmp_path_factory) -> Path:
    """A tiny SkyReels-A1-5B folder in the official layout: transformer/, vae/, pose_guider/, scheduler/ from the
    shared reference data, and a SigLIP folder with the release's 1152-wide, 729-token output (one layer,
    27 x 27 patches of 2 px) written by transformers' own save_pretrained."""
    import json
    import shutil

    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    tiny = fixture("skyreels_a1", "skyreels_a1_tiny")
    root = tmp_path_factory.mktemp("a1") / "pretrained_models" / "SkyReels-A1-5B"
    for part in ("transformer", "vae", "pose_guider", "scheduler"):
        shutil.copytree(tiny / part, root / part)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=16, num_hidden_layers=1,
                                                      num_attention_heads=16, image_size=54, patch_size=2))
    siglip.save_pretrained(root / "siglip-so400m-patch14-384")
    SiglipImageProcessor(size={"height": 54, "width": 54}).save_pretrained(root / "siglip-so400m-patch14-384")
    assert json.loads((root / "siglip-so400m-patch14-384" / "config.json").read_text())
    return root.parent.parent


@pytest.fixture(scope="session")
def hallo3_release(hallo_dir, tmp_path_factory) -> Path:
    """A tiny Hallo3 release in the official layout: hallo3/latest + hallo3/1/mp_rank_00_model_states.pt (SAT
    names, written by `sat_from_ours`) with hallo3/config.json (the reference data's SAT config at 2 layers,
    48 x 32 px, 9-frame clips), cogvideox-5b-i2v-sat/vae/3d-vae.pt (+ config.json), a T5 encoder with a
    sentencepiece tokenizer trained here, and the Hallo reference data's tiny wav2vec2."""
    import copy
    import json
    import shutil

    import sentencepiece as spm
    import torch
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5Config, T5EncoderModel

    from talkinghead.systems.hallo3.model import Hallo3Model
    from talkinghead.systems.hallo3.release import config_from_sat, sat_from_ours, sat_vae_from_diffusers

    tiny = fixture("hallo3", "hallo3_tiny")
    root = tmp_path_factory.mktemp("hallo3") / "pretrained_models"
    (root / "hallo3" / "1").mkdir(parents=True)
    (root / "hallo3" / "latest").write_text("1")
    config = json.loads((tiny / "config.json").read_text())
    mc = copy.deepcopy(config["model_config"])
    mc["network_config"]["params"]["num_frames"] = 9
    audio = {**config["audio_proj_args"], "blocks": 2, "channels": 32}  # the tiny wav2vec2: 2 layers of 32
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Hallo3Model(**config_from_sat(mc, audio, config["face_proj_args"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "cross_layers" in name and "to_out" in name:
                    p.normal_(0, 0.05)
        vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1,
                                     norm_num_groups=4, sample_height=32, sample_width=48)
        t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=16, num_heads=2, num_layers=1, d_ff=64,
                                     feed_forward_proj="gated-gelu"))
    torch.save({"module": sat_from_ours(model.state_dict())}, root / "hallo3" / "1" / "mp_rank_00_model_states.pt")
    (root / "hallo3" / "config.json").write_text(json.dumps({"model_config": mc, "audio_proj_args": audio,
                                                             "face_proj_args": config["face_proj_args"]}))
    vae_dir = root / "cogvideox-5b-i2v-sat" / "vae"
    vae_dir.mkdir(parents=True)
    torch.save({"state_dict": sat_vae_from_diffusers(vae.state_dict())}, vae_dir / "3d-vae.pt")
    (vae_dir / "config.json").write_text(json.dumps({k: v for k, v in vae.config.items() if not k.startswith("_")}))
    t5_dir = root / "t5-v1_1-xxl"
    text = tmp_path_factory.mktemp("spm") / "corpus.txt"
    text.write_text("a person is talking\nthe quick brown fox jumps over the lazy dog\n" * 20)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(text.with_suffix("")), vocab_size=32,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    t5.save_pretrained(t5_dir)
    shutil.copy(text.with_suffix(".model"), t5_dir / "spiece.model")  # T5's layout: pad 0, eos 1, unk 2
    w2v = root / "wav2vec" / "wav2vec2-base-960h"
    w2v.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(hallo_dir / "hallo_audio_tiny" / name, w2v / name)
    return root


@pytest.fixture(scope="session")
def skyreels_a2_release(tmp_path_factory) -> Path:
    """The tiny SkyReels-A2 release folder of the shared reference data, in the official Skywork/SkyReels-A2 place."""
    import shutil

    tiny = fixture("skyreels_a2", "skyreels_a2_tiny")
    root = tmp_path_factory.mktemp("a2")
    shutil.copytree(tiny, root / "Skywork" / "SkyReels-A2", ignore=shutil.ignore_patterns("io.safetensors"))
    return root


@pytest.fixture(scope="session")
def reference_images(tmp_path_factory) -> list[Path]:
    """An object (a red disc on white) and a background (a blue-green gradient), as png files."""
    import cv2

    folder = tmp_path_factory.mktemp("refs")
    thing = np.full((96, 96, 3), 255, np.uint8)
    cv2.circle(thing, (48, 48), 30, (200, 30, 30), -1)
    ramp = np.linspace(0, 255, 160, dtype=np.float32)
    background = np.stack([np.zeros((96, 160)), np.tile(ramp, (96, 1)), np.full((96, 160), 180)], -1).astype(np.uint8)
    paths = [folder / "thing.png", folder / "background.png"]
    for path, image in zip(paths, (thing, background)):
        cv2.imwrite(str(path), image[:, :, ::-1])
    return paths


@pytest.fixture(scope="session")
def hallo4_release(tmp_path_factory) -> Path:
    """A tiny Hallo4 release in the official layout: the reference data's hallo4/model_weight.ckpt,
    Wan2.1_Encoders/{config.json, Wan2.1_VAE.pth} and wav2vec2, plus a one-layer umt5 encoder in Wan's own format
    (4096 wide, as the DiT's text input is fixed) with a word-level tokenizer, and hallo4/inference.json with the
    small sizes (48 x 32 px, 9-frame clips, the reference data's audio projection and VAE width)."""
    import json
    import shutil

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    tiny = fixture("hallo4", "hallo4_tiny")
    root = tmp_path_factory.mktemp("hallo4") / "pretrained_models"
    for part in ("hallo4", "Wan2.1_Encoders", "wav2vec"):
        shutil.copytree(tiny / part, root / part)
    config = json.loads((tiny / "config.json").read_text())
    a = config["audio_proj_ctor"]
    (root / "hallo4" / "inference.json").write_text(json.dumps({
        "audio_proj": {k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim", "context_tokens")},
        "vae_dim": config["vae_cfg"]["dim"], "size_hw": [32, 48], "frame_num": 9, "sample_steps": 2}))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        t5 = UMT5EncoderModel(UMT5Config(vocab_size=32, d_model=4096, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                                         feed_forward_proj="gated-gelu"))
    names = {"shared": "token_embedding", "encoder.final_layer_norm": "norm"}
    wan = {}
    for key, value in t5.state_dict().items():  # transformers -> Wan's T5 names (the inverse of our loader's map)
        if key == "encoder.embed_tokens.weight":
            continue
        k = key.removesuffix(".weight")
        k = names.get(k, k)
        for ours, theirs in (("layer.0.SelfAttention.relative_attention_bias", "pos_embedding.embedding"),
                             ("layer.0.SelfAttention.", "attn."), ("layer.0.layer_norm", "norm1"),
                             ("layer.1.layer_norm", "norm2"), ("layer.1.DenseReluDense.wi_0", "ffn.gate.0"),
                             ("layer.1.DenseReluDense.wi_1", "ffn.fc1"), ("layer.1.DenseReluDense.wo", "ffn.fc2"),
                             ("encoder.block.", "blocks.")):
            k = k.replace(ours, theirs)
        wan[k + ".weight"] = value.to(torch.bfloat16)
    torch.save(wan, root / "Wan2.1_Encoders" / "models_t5_umt5-xxl-enc-bf16.pth")
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", "a", "person", "is", "talking"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(
        root / "Wan2.1_Encoders" / "google" / "umt5-xxl")
    return root


@pytest.fixture(scope="session")
def skeleton_video(tmp_path_factory) -> Path:
    """A 30-frame, 64 x 40 skeleton-style video (coloured limb lines on black), as a DWPose rendering looks."""
    import cv2

    from talkinghead.io.video import VideoWriter

    path = tmp_path_factory.mktemp("skeleton") / "skeleton.mp4"
    with VideoWriter(path, fps=25, size=(64, 40)) as writer:
        for i in range(30):
            frame = np.zeros((40, 64, 3), np.uint8)
            x = 32 + int(6 * np.sin(i / 4))
            cv2.line(frame, (x, 8), (x, 28), (255, 0, 0), 2)
            cv2.line(frame, (x, 14), (x - 10, 22 + i % 3), (0, 255, 0), 2)
            cv2.line(frame, (x, 14), (x + 10, 22 - i % 3), (0, 0, 255), 2)
            writer.write(frame)
    return path
