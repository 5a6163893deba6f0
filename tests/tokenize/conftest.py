"""Real sentencepiece models trained on the stdlib, shared by the tokenize tests: codemill's
own (`tok`) and a Code Llama-shaped one (`llama_tok`)."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from codemill.tokenize.tokenizer import load_tokenizer, train_tokenizer

from support import STDLIB


@pytest.fixture(scope="package")
def corpus() -> list[str]:
    """~3 MB of top-level stdlib modules: the training text."""
    texts, size = [], 0
    for path in sorted(STDLIB.glob("*.py")):
        texts.append(path.read_text(encoding="utf-8"))
        size += len(texts[-1])
        if size > 3_000_000:
            break
    return texts


@pytest.fixture(scope="package")
def held_out() -> list[str]:
    """Real files the tokenizer never saw."""
    paths = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    return [p.read_text(encoding="utf-8") for p in paths]


@pytest.fixture(scope="package")
def tok(corpus, tmp_path_factory):
    return train_tokenizer(corpus, tmp_path_factory.mktemp("tok") / "code", vocab_size=3000, num_threads=1)


@pytest.fixture(scope="package")
def llama_tok(corpus, tmp_path_factory):
    """A Code Llama-shaped model: dummy prefix, infilling tokens spelled ▁<PRE> etc."""
    prefix = tmp_path_factory.mktemp("llama") / "tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[:40]),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=2000,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 30,
        user_defined_symbols=["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
        num_threads=1,
        minloglevel=2,
    )
    return load_tokenizer(f"{prefix}.model")
