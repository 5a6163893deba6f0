"""The tokenizer and shards of real stdlib code that the trainer's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_hooks import STDLIB, _pieces, make_shards

from codemill.tokenize.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "json").glob("*.py"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "email").glob("*.py"))]
    return train_tokenizer(
        texts, tmp_path_factory.mktemp("tok") / "tiny", vocab_size=1000, num_threads=1
    )


@pytest.fixture(scope="module")
def shards(tok, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    code = _pieces(
        sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py")), 30_000
    )
    other = _pieces(sorted((STDLIB / "http").glob("*.py")), 12_000)
    long = _pieces(sorted((STDLIB / "email").glob("*.py")), 40_000)
    return {
        "code": make_shards(root / "code", tok, code),
        "other": make_shards(root / "other", tok, other),
        "long": make_shards(root / "long", tok, long, seq_len=256),
    }
