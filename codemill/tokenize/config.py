"""Settings of the tokenizer, fill-in-the-middle and packing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from codemill.config.loader import Section, setting

# Byte fallback alone needs 256 pieces; with the control and infilling tokens and
# some merges, smaller vocabularies cannot be trained.
MIN_VOCAB_SIZE = 300


@dataclass(frozen=True)
class TokenizerConfig(Section):
    """Defaults are Llama's (paper: 32k BPE, digits split, byte fallback)."""

    # Load this tokenizer.model (e.g. Llama's or Code Llama's) instead of training one.
    model: str | None = setting(None, path=True)
    vocab_size: int = setting(32000, ge=MIN_VOCAB_SIZE, le=1 << 20)
    # Llama's value: the rarest 0.005% of characters are left to byte fallback.
    character_coverage: float = setting(0.99995, gt=0.0, le=1.0)
    # Documents longer than this (UTF-8 bytes) are skipped by the trainer.
    max_doc_bytes: int = setting(1 << 30, ge=1)
    # 0 = all documents; else sentencepiece samples this many.
    max_docs: int = setting(0, ge=0)
    # How much of the cleaned corpus (a stable sample by id) the trainer reads.
    train_sample_bytes: int = setting(20_000_000, ge=1)


@dataclass(frozen=True)
class FimConfig(Section):
    rate: float = setting(0.9, ge=0.0, le=1.0)  # share of documents transformed (paper: 0.9)
    spm_rate: float = setting(0.5, ge=0.0, le=1.0)  # share of those in SPM format (rest PSM)


# Raised when the same settings give other rows, so a finished run's shards are re-packed.
# 2: under best fit, a long document's remainder opens a row of its own.
PACKING_VERSION = 2


@dataclass(frozen=True)
class PackConfig(Section):
    # Paper: 4,096-token sequences; 16,384 for long-context fine-tuning. A FIM document
    # needs room for BOS, EOS and four infilling tokens around its text.
    seq_len: int = setting(4096, ge=16, le=1 << 20)
    # best_fit: a document that fits in a row is never cut (rows padded); greedy: the
    # stream of documents cut every seq_len tokens (no padding, most documents cut).
    packing: Literal["best_fit", "greedy"] = "best_fit"
    best_fit_window: int = setting(256, ge=1)  # rows' worth of documents placed at a time
    remainder: Literal["pad", "drop"] = "pad"  # greedy: the final partial row
