"""Packing tokenized documents into fixed-length training sequences (Llama style).

Documents are concatenated as `<s> doc </s> <s> doc </s> …` and the stream is cut
every `seq_len` tokens, so no token is wasted on padding inside the stream; a
document longer than the context continues into the next sequence(s) (counted as
`docs_long`, and never FIM-transformed).

Each row: `input_ids` (seq_len int32), `doc_starts` (offsets of the BOS tokens in
the row, so loaders can restart position ids and build cu_seqlens; a row whose
offset 0 is not listed opens with the continuation of a document) and
`num_tokens` (real tokens; less than seq_len only in a padded final row).

The final partial sequence of a stream is padded by default (`remainder="pad"`,
pad id = EOS, loss-masked by `num_tokens`): nothing is lost silently, and a small
source still yields a sequence. `remainder="drop"` drops it, as Megatron does, and
counts the tokens dropped. Either way there is one partial row per stream (per
Spark partition), negligible at scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import pyarrow as pa

from codemill.config import FimConfig, PackConfig
from codemill.tokenize.fim import encode_documents
from codemill.tokenize.tokenizer import Tokenizer


@dataclass
class PackStats:
    """Counts of one packing run; `merge` adds the counts of another (e.g. per partition)."""

    docs_in: int = 0
    docs_empty: int = 0  # empty or whitespace-only: skipped
    docs_packed: int = 0  # docs_in == docs_packed + docs_empty
    docs_long: int = 0  # longer than one context with BOS/EOS: split, not FIM
    docs_psm: int = 0
    docs_spm: int = 0
    chars: int = 0  # characters of the packed documents
    tokens: int = 0  # real tokens written, BOS/EOS and FIM markers included
    pad_tokens: int = 0
    dropped_tokens: int = 0  # the remainder, with remainder="drop"
    sequences: int = 0

    def merge(self, other: PackStats) -> PackStats:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def sequence_schema(seq_len: int) -> pa.Schema:
    # Fixed-size rows: no offsets at all, so nothing can overflow 32-bit offsets, and
    # a shard's token buffer is one flat int32 array that loaders can slice.
    item = pa.field("item", pa.int32(), nullable=False)
    return pa.schema(
        [
            pa.field("input_ids", pa.list_(item, seq_len), nullable=False),
            pa.field("doc_starts", pa.list_(item), nullable=False),
            pa.field("num_tokens", pa.int32(), nullable=False),
        ],
        metadata={"seq_len": str(seq_len)},
    )


class SequencePacker:
    """Turns batches of token arrays into record batches of full rows; keeps the tail."""

    def __init__(
        self,
        seq_len: int,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        remainder: Literal["pad", "drop"] = "pad",
        stats: PackStats | None = None,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        self.seq_len, self.bos_id, self.eos_id, self.pad_id = seq_len, bos_id, eos_id, pad_id
        self.remainder = remainder
        self.stats = stats if stats is not None else PackStats()
        self.schema = sequence_schema(seq_len)
        self._tail = np.empty(0, dtype=np.int32)
        self._tail_starts = np.empty(0, dtype=np.int64)

    def add(self, docs: Sequence[np.ndarray]) -> pa.RecordBatch | None:
        """Append documents (ids without BOS/EOS); returns the rows completed, if any."""
        if not docs:
            return None
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs)) + 2
        self.stats.docs_long += int(np.count_nonzero(lengths > self.seq_len))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        n_tail = len(self._tail)
        stream = np.empty(n_tail + int(ends[-1]), dtype=np.int32)
        stream[:n_tail] = self._tail
        new = stream[n_tail:]
        body = np.ones(len(new), dtype=bool)
        body[starts] = body[ends - 1] = False
        new[body] = np.concatenate(docs)
        new[starts] = self.bos_id
        new[ends - 1] = self.eos_id
        doc_starts = np.concatenate([self._tail_starts, starts + n_tail])

        cut = len(stream) // self.seq_len * self.seq_len
        self._tail = stream[cut:].copy()
        self._tail_starts = doc_starts[doc_starts >= cut] - cut
        if cut == 0:
            return None
        return self._rows(stream[:cut], doc_starts[doc_starts < cut], cut)

    def finish(self) -> pa.RecordBatch | None:
        """The final partial row, padded (or dropped and counted)."""
        n = len(self._tail)
        if n == 0:
            return None
        tail, starts = self._tail, self._tail_starts
        self._tail = np.empty(0, dtype=np.int32)
        self._tail_starts = np.empty(0, dtype=np.int64)
        if self.remainder == "drop":
            self.stats.dropped_tokens += n
            return None
        row = np.full(self.seq_len, self.pad_id, dtype=np.int32)
        row[:n] = tail
        self.stats.pad_tokens += self.seq_len - n
        return self._rows(row, starts, n)

    def _rows(self, flat: np.ndarray, starts: np.ndarray, n_real: int) -> pa.RecordBatch:
        n_rows = len(flat) // self.seq_len
        row_of_start = starts // self.seq_len
        offsets = np.searchsorted(row_of_start, np.arange(n_rows + 1)).astype(np.int32)
        num_tokens = np.full(n_rows, self.seq_len, dtype=np.int32)
        num_tokens[-1] = n_real - (n_rows - 1) * self.seq_len
        in_row = (starts % self.seq_len).astype(np.int32)
        self.stats.tokens += n_real
        self.stats.sequences += n_rows
        return pa.RecordBatch.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(flat), self.seq_len),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(in_row)),
                pa.array(num_tokens),
            ],
            schema=self.schema,
        )


def pack_documents(
    batches: Iterable[tuple[Sequence[str], Sequence[str]]],
    tok: Tokenizer,
    fim: FimConfig,
    pack: PackConfig,
    seed: int,
    stats: PackStats | None = None,
    num_threads: int = 1,
) -> Iterator[pa.RecordBatch]:
    """Tokenize, FIM-transform and pack batches of (texts, document ids) into rows.

    Counts go into `stats` (pass one in to read them after the generator ends).
    The draws depend only on (seed, document id), the packing on document order.
    """
    stats = stats if stats is not None else PackStats()
    packer = SequencePacker(pack.seq_len, tok.bos_id, tok.eos_id, tok.eos_id, pack.remainder, stats)
    for texts, doc_ids in batches:
        keep = [k for k, t in enumerate(texts) if t and not t.isspace()]
        stats.docs_in += len(texts)
        stats.docs_empty += len(texts) - len(keep)
        if len(keep) < len(texts):
            texts = [texts[k] for k in keep]
            doc_ids = [doc_ids[k] for k in keep]
        stats.docs_packed += len(texts)
        stats.chars += sum(map(len, texts))
        enc = encode_documents(texts, doc_ids, tok, fim, seed, pack.seq_len - 2, num_threads)
        counts = np.bincount(enc.modes, minlength=3)
        stats.docs_psm += int(counts[1])
        stats.docs_spm += int(counts[2])
        rows = packer.add(enc.ids)
        if rows is not None:
            yield rows
    rows = packer.finish()
    if rows is not None:
        yield rows
