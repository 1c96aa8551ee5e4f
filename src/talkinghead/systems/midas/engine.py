"""MIDAS's engine: streams chunks of the autoregressive model over its video autoencoder, from a `talkinghead train`
run."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ...config import AnimateConfig
from ...errors import InputError
from ...types import Portrait, Speech
from ..trained import PortraitClock, find_checkpoint, load_trained_net, read_train_config


class MidasAnimator(PortraitClock):
    """MIDAS from its autoregressive-stage checkpoint (which names the autoencoder checkpoint it was trained on):
    the portrait's latent fills the reference slot, log-mel features resampled as in training drive the
    frame-causal transformer chunk by chunk, and the autoencoder decodes each frame as it comes (streaming)."""

    engine = "midas"

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        from ...face.landmarks import prepare
        from .pipeline import MidasPipeline
        from .train import MidasAutoregressive

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        folder = find_checkpoint(d.checkpoint_dir, self.engine)
        train = read_train_config(folder, self.engine)
        if str(train.stage) != "ar":
            raise InputError(f"{folder} is not a MIDAS autoregressive (stage ar) checkpoint",
                             "pass the output folder of a midas_ar run")
        if not train.system.vae:
            raise InputError(f"{folder} was trained without a saved autoencoder (system.vae is empty)",
                             "train midas_ae1..3 first and set system.vae to the ae3 checkpoint in midas_ar.yaml")
        if r.crop != "face":
            raise InputError(f"must be face for engine midas (it renders the square face crop it was trained on), "
                             f"got {r.crop!r}", "use crop face", field="crop")
        system = MidasAutoregressive(train)
        load_trained_net(system.net, folder)
        self.system, self.train = system.eval(), train
        self.pipe = MidasPipeline(system.ae, system.net)
        self.steps = d.steps
        h, w = system.net.config.latent_size
        s = system.ae.config.spatial_compression
        self.portrait, self.face = prepare(portrait, r.size, "face", r.face_index, warn=warn)
        import torch.nn.functional as F

        image = torch.from_numpy(self.portrait.image).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        self.reference = F.interpolate(image, size=(h * s, w * s), mode="bilinear", antialias=True,
                                       align_corners=False)

    @torch.no_grad()
    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        import cv2

        from .pipeline import frames_to_uint8, split_chunks
        from ...train.preprocess import log_mel

        n = self.n_frames(speech)
        chunk = self.system.net.config.chunk_frames
        whole = -(-n // chunk) * chunk
        mel = torch.from_numpy(log_mel(speech.samples, whole, self.fps))[:, None]  # (whole, 1, 4, 80)
        features = self.system.audio({"audio": mel[None], "drop_audio": torch.tensor([False])}, whole)
        generator = torch.Generator().manual_seed(self.config.motion.seed)
        size = self.frame_size
        stream = self.pipe.stream(self.reference, split_chunks(features, self.system.net.config),
                                  generator=generator, steps=self.steps)
        for _, frame in zip(range(n), stream):
            yield cv2.resize(frames_to_uint8(frame[0]).numpy(), size, interpolation=cv2.INTER_CUBIC)
