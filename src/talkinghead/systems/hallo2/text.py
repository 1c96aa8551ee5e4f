"""Hallo2's textual prompt control, its front end: a T5 encoder (the folder layout and loader Hallo3 uses,
models/text_encoders.py) turns an expression prompt into one pooled embedding, the mean of the encoder's last
hidden states over the prompt's tokens, which the text AdaLNs of a Hallo2 text variant read."""
from __future__ import annotations

from pathlib import Path

import torch

MAX_PROMPT_TOKENS = 226  # T5 tokens kept of a prompt (with its end-of-sequence), as Hallo3's text length
FILES = {"T5 encoder config": ["config.json"], "T5 tokenizer": ["spiece.model"],
         "T5 encoder weights": ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                "pytorch_model.bin.index.json"]}


class PromptEncoder:
    """A T5 encoder folder -> `embed(prompt)` (1, d_model) pooled embeddings, each prompt encoded once.

    The encoder is frozen and held outside any trained net (it is not saved with one). It stays on the CPU, in
    float32: each distinct prompt runs through it once, and its pooled embedding is cached and moved to the net's
    device (a training run sees a handful of prompts; a render, one)."""

    def __init__(self, folder: str | Path):
        from ...models.checkpoints import require_files
        from ...models.text_encoders import load_t5

        self.folder = Path(folder).expanduser()
        require_files(self.folder, FILES, "T5 encoder (e.g. google/t5-v1_1-base or the t5-v1_1-xxl of a Hallo3 "
                      "release: config.json, weights, spiece.model)")
        with _quiet_transformers():
            self.tokenizer, self.encoder = load_t5(self.folder)
        self.encoder.requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        """Width of the pooled embedding (the encoder's d_model)."""
        return int(self.encoder.config.d_model)

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """(1, dim) float32 on the CPU: the mean of T5's last hidden states over the prompt's tokens."""
        from ...models.text_encoders import t5_token_ids

        prompt = " ".join((prompt or "").split())
        if prompt not in self._cache:
            n = min(len(self.tokenizer.encode(prompt)) + 1, MAX_PROMPT_TOKENS)  # pieces + end-of-sequence, no padding
            param = next(self.encoder.parameters())
            ids = t5_token_ids(self.tokenizer, prompt, n).to(param.device)
            hidden = self.encoder(input_ids=ids).last_hidden_state  # (1, n, d)
            self._cache[prompt] = hidden.float().mean(1).cpu()
        return self._cache[prompt]

    def embed_batch(self, prompts: list[str], like: torch.Tensor) -> torch.Tensor:
        """(len(prompts), dim) in `like`'s device and dtype."""
        return torch.cat([self.embed(p) for p in prompts]).to(like.device, like.dtype)


def write_tiny_t5(folder: str | Path, seed: int = 0) -> Path:
    """A one-layer, 32-wide T5 encoder with a sentencepiece tokenizer trained here on a few sentences, in the
    folder layout `PromptEncoder` reads: what smoke runs and tests use in place of a released T5."""
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("a person is talking\na smiling person\nan angry person shouting\na sad calm face\n"
                      "the quick brown fox jumps over the lazy dog\n" * 20)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=32,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
                                   minloglevel=2)
    corpus.unlink()
    (folder / "spiece.vocab").unlink(missing_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=32, d_kv=16, num_heads=2, num_layers=1, d_ff=64,
                                     feed_forward_proj="gated-gelu"))
    with _quiet_transformers():
        t5.save_pretrained(folder)
    return folder


class _quiet_transformers:  # noqa: N801 (a context manager)
    """transformers without its progress bars while loading or saving (a render's progress is its own)."""

    def __enter__(self):
        from transformers.utils import logging

        self.enabled = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        if self.enabled:
            logging.enable_progress_bar()


__all__ = ["PromptEncoder", "write_tiny_t5", "MAX_PROMPT_TOKENS"]
