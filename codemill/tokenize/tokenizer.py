"""A sentencepiece BPE tokenizer with Llama's settings and Code Llama's infilling tokens.

`train_tokenizer` trains one on a corpus; `load_tokenizer` opens any Llama-family
`tokenizer.model` (ours or Meta's) and finds its infilling ids. Both give a
`Tokenizer`, which offers the two encodings FIM needs (docs/architecture.md, Code Llama's recipe): `encode`
(sentencepiece's own, with the model's implicit leading space if it has one) and
`encode_no_prefix` (enc': the same model without that space).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from codemill.storage.local import write_bytes_atomic
from codemill.tokenize.config import TokenizerConfig

# The four infilling markers. Code Llama's released vocabulary spells them with a
# leading "▁" (ids 32007-32010); ours without.
INFILL_NAMES = ("PRE", "SUF", "MID", "EOT")


class TokenizerError(ValueError):
    pass


def train_tokenizer(
    texts: Iterable[str],
    out_prefix: str | os.PathLike,
    vocab_size: int | None = None,
    *,
    config: TokenizerConfig | None = None,
    num_threads: int | None = None,
) -> Tokenizer:
    """Train a BPE model on whole documents and write `<out_prefix>.model` atomically.

    Whole documents (not lines) are the trainer's "sentences", so newlines and the
    indentation after them are learned as pieces instead of being left to byte fallback.
    `vocab_size` overrides `config.vocab_size` (32,000 by default, Llama's).
    """
    cfg = config or TokenizerConfig()
    path = Path(f"{os.fspath(out_prefix)}.model")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    try:
        _train(texts, model, vocab_size or cfg.vocab_size, cfg, num_threads)
    except RuntimeError as exc:
        raise TokenizerError(f"training {path} failed: {exc}") from None
    write_bytes_atomic(path, model.getvalue())
    return load_tokenizer(path)


def _train(
    texts: Iterable[str],
    model: io.BytesIO,
    vocab_size: int,
    cfg: TokenizerConfig,
    num_threads: int | None,
) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,  # the model proto only; no .vocab file
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=cfg.character_coverage,
        byte_fallback=True,
        split_digits=True,
        # Identity: no NFKC, so decode(encode(x)) == x for any Unicode text.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        # No implicit leading space. With it, the first line of a file would be
        # tokenized differently ("▁import") from every other line ("\nimport"), and
        # FIM would need enc' != enc. Without it enc' == enc and round trips are exact.
        add_dummy_prefix=False,
        max_sentence_length=cfg.max_doc_bytes,
        input_sentence_size=cfg.max_docs,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # Control symbols, not user-defined ones: sentencepiece never produces a control
        # id from text, so a source file that contains the string "<PRE>" (this project
        # does) cannot forge an infilling marker. FIM inserts the ids itself.
        control_symbols=[f"<{n}>" for n in INFILL_NAMES],
        num_threads=num_threads or os.cpu_count() or 1,
        minloglevel=2,
    )


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Open a Llama-family sentencepiece model that has the four infilling tokens.

    Where a model declares them as user-defined pieces rather than control symbols,
    text that spells one (" <PRE>" with Code Llama's "▁<PRE>") encodes to the marker
    id; models trained by `train_tokenizer` are immune.

    Cached per process (keyed by path, size and mtime), so Spark tasks that each
    call it on an executor build the processors once.
    """
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer model {p} does not exist") from None
    return _load_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, size: int, mtime_ns: int) -> Tokenizer:
    return Tokenizer(Path(path).read_bytes(), path)


class Tokenizer:
    """A loaded model: encode/decode, special ids, and the model file's identity.

    Pickles as (path, sha256): an unpickled copy reloads the file through the
    per-process cache (falling back to SparkFiles for a model shipped with
    `SparkContext.addFile`) and refuses a file whose content changed.
    """

    def __init__(self, model_proto: bytes, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.name = os.path.basename(self.path)
        self.sha256 = hashlib.sha256(model_proto).hexdigest()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as exc:
            raise TokenizerError(f"{self.path} is not a sentencepiece model: {exc}") from None
        self.dummy_prefix = _has_dummy_prefix(model_proto)
        # enc' (docs/architecture.md, Code Llama's recipe): the same model with the
        # normaliser's dummy prefix turned off.
        self._sp_bare = (
            spm.SentencePieceProcessor(model_proto=_without_dummy_prefix(model_proto))
            if self.dummy_prefix
            else self._sp
        )
        self.vocab_size: int = self._sp.vocab_size()
        self.unk_id: int = self._sp.unk_id()
        self.bos_id: int = self._sp.bos_id()
        self.eos_id: int = self._sp.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise TokenizerError(f"{self.path}: the model has no BOS/EOS tokens")
        self.pre_id, self.suf_id, self.mid_id, self.eot_id = self._infill_ids()

    def _infill_ids(self) -> tuple[int, int, int, int]:
        ids, missing = [], []
        for name in INFILL_NAMES:
            # piece_to_id answers unk_id for an unknown piece; check the id maps back.
            found = [
                self._sp.piece_to_id(piece)
                for piece in (f"<{name}>", f"▁<{name}>")
                if self._sp.id_to_piece(self._sp.piece_to_id(piece)) == piece
            ]
            if found:
                ids.append(found[0])
            else:
                missing.append(name)
        if missing:
            raise TokenizerError(
                f"{self.path}: no infilling token(s) "
                + ", ".join(f"<{n}>" for n in missing)
                + " (looked for <X> and Code Llama's ▁<X>); train a tokenizer with codemill "
                "or use a Code Llama tokenizer.model"
            )
        return tuple(ids)

    @property
    def special_ids(self) -> dict[str, int]:
        return {
            "unk": self.unk_id,
            "bos": self.bos_id,
            "eos": self.eos_id,
            "pre": self.pre_id,
            "suf": self.suf_id,
            "mid": self.mid_id,
            "eot": self.eot_id,
        }

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_no_prefix(self, text: str) -> list[int]:
        """enc': the encoding without the implicit leading space (== encode for our models)."""
        return self._sp_bare.encode(text)

    def encode_batch(
        self, texts: Sequence[str], prefix: bool = True, num_threads: int = 1
    ) -> list[np.ndarray]:
        """Encode many texts in one C++ call; int32 arrays, read-only, no Python int per token.

        One thread by default: Spark already runs one task per core.
        """
        sp = self._sp if prefix else self._sp_bare
        return sp.encode(list(texts), out_type="numpy", num_threads=num_threads)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Inverse of `encode`; control tokens (BOS, EOS, infilling) decode to nothing."""
        return self._sp.decode(_as_list(ids))

    def decode_no_prefix(self, ids: Sequence[int] | np.ndarray) -> str:
        """Inverse of `encode_no_prefix`: keeps a leading space that `decode` would drop."""
        return self._sp_bare.decode(_as_list(ids))

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def infilling_is_control(self) -> bool:
        """Whether the infilling tokens are control pieces, which text cannot produce
        (codemill's models), rather than user-defined ones (Code Llama's)."""
        return all(self._sp.is_control(i) for i in (self.pre_id, self.suf_id, self.mid_id, self.eot_id))

    def score(self, i: int) -> float:
        """The piece's score: for a BPE model, merges into higher-scoring pieces come first."""
        return self._sp.get_score(int(i))

    def __reduce__(self):
        return _unpickle, (self.path, self.sha256)

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab={self.vocab_size}, sha256={self.sha256[:12]})"


def _unpickle(path: str, sha256: str) -> Tokenizer:
    tok = load_tokenizer(path if os.path.exists(path) else _shipped_file(path))
    if tok.sha256 != sha256:
        raise TokenizerError(
            f"tokenizer {path} has sha256 {tok.sha256}, expected {sha256}: the file changed"
        )
    return tok


def _shipped_file(path: str) -> str:
    """Where SparkContext.addFile put a file of this name on this executor."""
    from pyspark import SparkFiles

    try:
        shipped = SparkFiles.get(os.path.basename(path))
    except AssertionError:  # pyspark's answer when this process has no SparkContext
        shipped = None
    if shipped is None or not os.path.exists(shipped):
        raise TokenizerError(
            f"tokenizer model {path} does not exist on this machine and was not shipped "
            "with SparkContext.addFile"
        )
    return shipped


def _as_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    return ids.tolist() if isinstance(ids, np.ndarray) else list(ids)


# --- the few protobuf fields we touch -------------------------------------------------
# ModelProto field 1 is the repeated SentencePiece (field 3: its type); field 3 is
# NormalizerSpec, whose field 3 is `add_dummy_prefix` (bool, default true); field 4 is
# self-test data, recorded with the original normaliser. Reading the wire format
# directly avoids a protobuf dependency for a flag and a list of types.


class PieceType(enum.IntEnum):
    """sentencepiece_model.proto's SentencePiece.Type."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


def piece_types(model_proto: bytes) -> list[PieceType]:
    """The type of every piece, in id order (the API has no test for user-defined pieces)."""
    types = []
    for num, wire, raw in _fields(model_proto):
        if num == 1 and wire == 2:
            kind = PieceType.NORMAL  # the field's default
            for sub, sub_wire, sub_raw in _fields(_payload(raw)):
                if sub == 3 and sub_wire == 0:
                    kind = PieceType(_varint(sub_raw, _varint(sub_raw, 0)[1])[0])
            types.append(kind)
    return types


def _has_dummy_prefix(model_proto: bytes) -> bool:
    for num, wire, raw in _fields(model_proto):
        if num == 3 and wire == 2:
            for sub, sub_wire, sub_raw in _fields(_payload(raw)):
                if sub == 3 and sub_wire == 0:
                    return _varint(sub_raw, _varint(sub_raw, 0)[1])[0] != 0
    return True


def _without_dummy_prefix(model_proto: bytes) -> bytes:
    out = bytearray()
    for num, wire, raw in _fields(model_proto):
        if num == 4:
            continue
        if num == 3 and wire == 2:
            spec = b"".join(r for n, _, r in _fields(_payload(raw)) if n != 3) + b"\x18\x00"
            raw = b"\x1a" + _encode_varint(len(spec)) + spec
        out += raw
    return bytes(out)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fields(buf: bytes) -> Iterable[tuple[int, int, bytes]]:
    """(field number, wire type, raw bytes including the tag) of each top-level field."""
    i = 0
    while i < len(buf):
        start = i
        tag, i = _varint(buf, i)
        wire = tag & 7
        if wire == 0:
            i = _varint(buf, i)[1]
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = _varint(buf, i)
            i += n
        elif wire == 5:
            i += 4
        else:
            raise TokenizerError(f"unsupported protobuf wire type {wire}")
        yield tag >> 3, wire, buf[start:i]


def _payload(raw: bytes) -> bytes:
    """The bytes of a length-delimited field, given its raw encoding."""
    n, i = _varint(raw, _varint(raw, 0)[1])
    return raw[i : i + n]
