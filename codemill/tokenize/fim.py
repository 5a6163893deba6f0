"""Fill-in-the-middle, exactly as Code Llama trains it (docs/architecture.md, Code Llama's recipe).

Each document is split at two character positions drawn independently and
uniformly over its length; with probability `rate` it is rewritten as

    PSM: <PRE> enc(prefix) <SUF> enc'(suffix) <MID> enc'(middle) <EOT>
    SPM: <PRE> <SUF> enc'(suffix) <MID> enc(prefix + middle) <EOT>

half of the time each. A document is transformed only if the transformed
sequence, with BOS and EOS, fits in one context, so no FIM example is ever cut
across contexts.

Every draw comes from a hash of (seed, document id), never from a generator
shared by the process, so a document's transformation does not depend on call
order, partitioning or worker count.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from codemill.tokenize.config import FimConfig
from codemill.tokenize.tokenizer import Tokenizer

Mode = Literal["none", "psm", "spm"]
MODES: tuple[Mode, ...] = ("none", "psm", "spm")  # index = the code in `EncodedDocs.modes`

# Documents longer than this many characters per available token are encoded plainly
# first and only then tried in FIM form, if the plain form leaves room for the four
# FIM tokens. It only decides which encoding is tried first (Python code runs at
# 3.2-3.7 characters per token), so that ~97% of the text is encoded exactly once.
_CHARS_PER_TOKEN_GUESS = 4.0


class FimDraw(NamedTuple):
    apply: bool
    spm: bool
    lo: int  # prefix = text[:lo], middle = text[lo:hi], suffix = text[hi:]
    hi: int


def draw_fim(doc_id: str, n_chars: int, cfg: FimConfig, seed: int) -> FimDraw:
    """The document's random choices: four 64-bit uniforms from blake2b(seed, id).

    A keyed hash rather than a numpy Generator: ~1 µs per document, and the same
    stream on every machine and numpy version. Split points are uniform over
    0..n_chars (multiply-shift; bias below 2^-20 for any real document).
    """
    digest = hashlib.blake2b(
        f"{seed}\x00{doc_id}".encode(), digest_size=32, person=b"codemill.fim"
    ).digest()
    u_apply, u_mode, u_a, u_b = struct.unpack("<4Q", digest)
    a = (u_a * (n_chars + 1)) >> 64
    b = (u_b * (n_chars + 1)) >> 64
    apply, spm = u_apply < cfg.rate * 2.0**64, u_mode < cfg.spm_rate * 2.0**64
    return FimDraw(apply, spm, min(a, b), max(a, b))


class EncodedDocs(NamedTuple):
    ids: list[np.ndarray]  # int32 ids per document, no BOS/EOS (read-only when not transformed)
    modes: np.ndarray  # int8 index into MODES per document


def encode_documents(
    texts: Sequence[str],
    doc_ids: Sequence[str],
    tok: Tokenizer,
    cfg: FimConfig,
    seed: int,
    max_tokens: int | None = None,
    num_threads: int = 1,
) -> EncodedDocs:
    """Tokenize a batch of documents, FIM-transforming those drawn that fit `max_tokens`.

    `max_tokens` is the room a document has in one context (seq_len minus BOS and
    EOS); None means every document fits (the caller says so). All encoding runs
    in a few batched sentencepiece calls.
    """
    n = len(texts)
    limit = max_tokens if max_tokens is not None else float("inf")
    draws = [draw_fim(i, len(t), cfg, seed) for t, i in zip(texts, doc_ids)]
    fim_first = [
        d.apply and len(t) <= limit * _CHARS_PER_TOKEN_GUESS for d, t in zip(draws, texts)
    ]
    out: list[np.ndarray | None] = [None] * n
    modes = np.zeros(n, dtype=np.int8)

    def encode(idx: list[int]) -> list[np.ndarray]:
        return tok.encode_batch([texts[k] for k in idx], num_threads=num_threads)

    plain_idx = [k for k in range(n) if not fim_first[k]]
    fim_idx = [k for k in range(n) if fim_first[k]]
    for k, ids in zip(plain_idx, encode(plain_idx)):
        out[k] = ids
        if draws[k].apply and len(ids) + 4 <= limit:
            fim_idx.append(k)  # longer than guessed in characters, yet may fit

    replain = []
    for k, ids in zip(fim_idx, _encode_fim(texts, draws, fim_idx, tok, num_threads)):
        if len(ids) <= limit:
            out[k] = ids
            modes[k] = 2 if draws[k].spm else 1
        elif out[k] is None:
            replain.append(k)
    for k, ids in zip(replain, encode(replain)):
        out[k] = ids
    return EncodedDocs(out, modes)


def _encode_fim(
    texts: Sequence[str], draws: list[FimDraw], idx: list[int], tok: Tokenizer, num_threads: int
) -> list[np.ndarray]:
    # Gather the parts encoded with enc and with enc', encode each list in one call.
    with_prefix: list[str] = []
    bare: list[str] = []
    for k in idx:
        t, (_, spm, lo, hi) = texts[k], draws[k]
        if spm:
            bare.append(t[hi:])
            with_prefix.append(t[:hi])
        else:
            with_prefix.append(t[:lo])
            bare += (t[hi:], t[lo:hi])
    if tok.dummy_prefix:
        enc = iter(tok.encode_batch(with_prefix, num_threads=num_threads))
        enc_bare = iter(tok.encode_batch(bare, prefix=False, num_threads=num_threads))
    else:  # enc' == enc: one call for everything
        encoded = tok.encode_batch(with_prefix + bare, num_threads=num_threads)
        enc, enc_bare = iter(encoded[: len(with_prefix)]), iter(encoded[len(with_prefix) :])

    pre, suf, mid, eot = (
        np.array([i], dtype=np.int32) for i in (tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id)
    )
    pre_suf = np.concatenate([pre, suf])
    result = []
    for k in idx:
        if draws[k].spm:
            suffix = next(enc_bare)
            result.append(np.concatenate([pre_suf, suffix, mid, next(enc), eot]))
        else:
            prefix, suffix, middle = next(enc), next(enc_bare), next(enc_bare)
            result.append(np.concatenate([pre, prefix, suf, suffix, mid, middle, eot]))
    return result


def fim_transform(
    text: str,
    doc_id: str,
    tok: Tokenizer,
    cfg: FimConfig,
    seed: int,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, Mode]:
    """One document: its token ids (no BOS/EOS) and the format it was put in."""
    enc = encode_documents([text], [doc_id], tok, cfg, seed, max_tokens)
    return enc.ids[0], MODES[enc.modes[0]]


def undo_fim(ids: Sequence[int] | np.ndarray, tok: Tokenizer, mode: Mode | None = None) -> str:
    """The original document from one document's (possibly transformed) token ids.

    BOS/EOS around it are ignored. A PSM document with an empty prefix has the same
    layout as SPM; with a dummy-prefix tokenizer they decode differently, so pass
    `mode` when it is known.
    """
    seq = [int(i) for i in ids]
    if seq and seq[0] == tok.bos_id:
        seq = seq[1:]
    if seq and seq[-1] == tok.eos_id:
        seq = seq[:-1]
    if not seq or seq[0] != tok.pre_id:
        return tok.decode(seq)
    try:
        s, m, e = seq.index(tok.suf_id), seq.index(tok.mid_id), seq.index(tok.eot_id)
    except ValueError:
        raise ValueError("a FIM sequence must hold <SUF>, <MID> and <EOT>") from None
    if mode == "spm" or (mode is None and s == 1):
        return tok.decode(seq[m + 1 : e]) + tok.decode_no_prefix(seq[s + 1 : m])
    prefix, middle = tok.decode(seq[1:s]), tok.decode_no_prefix(seq[m + 1 : e])
    return prefix + middle + tok.decode_no_prefix(seq[s + 1 : m])


def render(ids: Sequence[int] | np.ndarray, tok: Tokenizer) -> str:
    """Decode a packed sequence for people: control tokens shown as <s>, </s>, <PRE>, …"""
    names = {
        tok.bos_id: "<s>",
        tok.eos_id: "</s>",
        tok.pre_id: "<PRE>",
        tok.suf_id: "<SUF>",
        tok.mid_id: "<MID>",
        tok.eot_id: "<EOT>",
    }
    parts: list[str] = []
    run: list[int] = []
    bare = True  # a sequence may open mid-document: no leading space to drop
    spm = prev = None
    for i in (int(x) for x in ids):
        if i not in names:
            run.append(i)
            prev = i
            continue
        parts += (tok.decode_no_prefix(run) if bare else tok.decode(run), names[i])
        run = []
        if i == tok.suf_id:
            spm = prev == tok.pre_id
        # enc' follows <SUF>, and <MID> in PSM; enc follows <s>, <PRE>, and <MID> in SPM.
        bare = i == tok.suf_id or (i == tok.mid_id and not spm)
        prev = i
    parts.append(tok.decode_no_prefix(run) if bare else tok.decode(run))
    return "".join(parts)
