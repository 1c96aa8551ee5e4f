"""The text front end of the systems that read a prompt (Hallo2's text variant, Hallo3, Hallo4, SkyReels-A2):
T5/UMT5 tokenizers and encoders from a local folder only (nothing is downloaded), the encoder's weights checked
against its class."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError


def load_t5(folder: str | Path):
    """(sentencepiece tokenizer, transformers T5EncoderModel in eval mode) of a T5 folder laid out as Hallo3's
    release `t5-v1_1-xxl/`: transformers' config.json and weights, and T5's own sentencepiece model `spiece.model`.
    Local files only; the caller checks the files are there. Weights the encoder needs but the folder lacks, or
    holds in another shape, are a CheckpointError naming them (a full T5 checkpoint's decoder is not needed)."""
    import sentencepiece
    from transformers import T5EncoderModel

    folder = Path(folder)
    tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    encoder, info = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    bad = sorted(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if bad:
        more = f"\n  ... and {len(bad) - 12} more" if len(bad) > 12 else ""
        raise CheckpointError(f"{folder} does not hold a T5 encoder's weights; keys missing or mismatched:\n"
                              + "\n".join(f"  {k}" for k in bad[:12]) + more)
    return tokenizer, encoder.eval()


def t5_token_ids(sp, text: str, length: int) -> torch.Tensor:
    """(1, length) T5 input ids as Hallo3's official text conditioner makes them (T5's sentencepiece pieces,
    truncated, then end-of-sequence, then padding to `length`), read with sentencepiece itself."""
    eos, pad = sp.eos_id(), max(sp.pad_id(), 0)
    ids = list(sp.encode(text))[: length - 1] + [eos]
    return torch.tensor([ids + [pad] * (length - len(ids))], dtype=torch.long)


def load_tokenizer(folder: str | Path):
    """transformers' tokenizer saved in a local folder (the umt5-xxl tokenizer of Hallo4 and SkyReels-A2)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


__all__ = ["load_t5", "load_tokenizer", "t5_token_ids"]
