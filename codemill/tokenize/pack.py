"""Packing tokenized documents into fixed-length training sequences.

Every document is framed `<s> doc </s>`. Two ways to fill rows:

* **best fit** (the default): a document that fits in a row is never cut. A
  longer one (`docs_long`, never FIM-transformed) is split into full rows plus
  a remainder first; then each window of documents and remainders is placed by
  best-fit decreasing (longest first, each into the row with the least room
  that holds it), and rows are padded (Ding et al., "Fewer Truncations Improve
  Language Modeling", 2024). A little padding buys no truncation.
* **greedy**: the stream `<s> doc </s> <s> doc </s> …` is cut every `seq_len`
  tokens, so documents run on across rows (no padding inside the stream),
  except FIM-transformed ones, which start a new row when they would not fit
  in the rest of the current one.

Either way a FIM-transformed document lies within one row, as the paper
applies FIM only to documents that are not cut across contexts; `docs_cut`
counts the documents spread over more than one row.

Each row: `input_ids` (seq_len int32), `doc_starts` (offsets of the BOS tokens in
the row, so loaders can restart position ids and build cu_seqlens; a row whose
offset 0 is not listed opens with the continuation of a document) and
`num_tokens` (real tokens; less than seq_len only in a padded final row).

Greedy packing pads the final partial sequence of a stream by default
(`remainder="pad"`, pad id = EOS, loss-masked by `num_tokens`): nothing is lost
silently, and a small source still yields a sequence. `remainder="drop"` drops it,
as Megatron does, and counts the tokens dropped. Either way there is one partial
row per stream (per Spark partition), negligible at scale. Best-fit rows are
always padded (`remainder` does not apply).

Instruction examples (codemill.selfinstruct) go through the same packer with
`whole=True`: never cut, each row padded where the next example does not fit, and
rows carry `loss_spans` (codemill.tokenize.shard_format).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import pyarrow as pa

from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.fim import encode_documents
from codemill.tokenize.shard_format import instruction_schema, sequence_schema
from codemill.tokenize.tokenizer import Tokenizer


@dataclass
class PackStats:
    """Counts of one packing run; `merge` adds the counts of another (e.g. per partition)."""

    docs_in: int = 0
    docs_empty: int = 0  # empty or whitespace-only: skipped
    docs_packed: int = 0  # docs_in == docs_packed + docs_empty
    docs_long: int = 0  # longer than one context with BOS/EOS: split, not FIM
    docs_cut: int = 0  # spread over more than one row (long ones, and greedy run-ons)
    docs_psm: int = 0
    docs_spm: int = 0
    fim_tokens: int = 0  # tokens of the FIM documents, with BOS/EOS
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


class SequencePacker:
    """Turns batches of token arrays into record batches of full rows; keeps the tail.

    Every document is framed `<s> doc </s>`. By default the stream of documents is cut
    every seq_len tokens (greedy, the module docstring), except documents `add` marks
    whole. `best_fit=True` places windows of `window_rows` rows' worth of documents by
    best-fit decreasing instead. With `whole=True` (instruction examples) no document
    straddles two rows: one that does not fit in the rest of the row starts the next
    row, and the row is padded; each document must fit in one row. `loss_spans=True`
    (whole documents only) adds the instruction column: `add` then takes each
    document's [start, end) answer span, in offsets from its BOS."""

    def __init__(
        self,
        seq_len: int,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        remainder: Literal["pad", "drop"] = "pad",
        stats: PackStats | None = None,
        *,
        whole: bool = False,
        loss_spans: bool = False,
        best_fit: bool = False,
        window_rows: int = 256,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if loss_spans and not whole:
            raise ValueError("loss_spans need whole documents: a span must not cross rows")
        if best_fit and (whole or loss_spans):
            raise ValueError("best_fit places pretraining documents; whole and loss_spans are greedy")
        self.seq_len, self.bos_id, self.eos_id, self.pad_id = seq_len, bos_id, eos_id, pad_id
        self.remainder, self.whole, self.loss_spans = remainder, whole, loss_spans
        self.best_fit, self.window_rows = best_fit, window_rows
        self._items: list[np.ndarray] = []  # best fit: framed documents and remainders waiting
        self._full: list[np.ndarray] = []  # best fit: full rows cut from long documents
        self._waiting = 0  # tokens in both
        self.stats = stats if stats is not None else PackStats()
        self.schema = instruction_schema(seq_len) if loss_spans else sequence_schema(seq_len)
        self._tail = np.empty(0, dtype=np.int32)
        self._tail_starts = np.empty(0, dtype=np.int64)
        self._tail_spans = np.empty((0, 2), dtype=np.int64)

    def add(self, docs: Sequence[np.ndarray], spans: Sequence[tuple[int, int]] | None = None,
            whole: np.ndarray | None = None) -> pa.RecordBatch | None:
        """Append documents (ids without BOS/EOS), with their answer spans when the packer
        has loss_spans; `whole` marks documents that must lie within one row (FIM ones).
        Returns the rows completed, if any."""
        if (spans is not None) != self.loss_spans or spans is not None and len(spans) != len(docs):
            raise ValueError("give one span per document exactly when the packer has loss_spans")
        if not docs:
            return None
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs)) + 2
        if self.best_fit:
            return self._add_best_fit(docs, lengths)
        n_tail = len(self._tail)
        if self.whole or whole is None:
            whole = np.full(len(docs), self.whole)
        whole = np.asarray(whole, dtype=bool)
        if whole.any():
            starts, pads = self._place(lengths, n_tail, whole)
            ends = starts + lengths
        else:
            ends = np.cumsum(lengths)
            starts = ends - lengths
            pads = np.empty(0, dtype=np.int64)
        self.stats.docs_long += int(np.count_nonzero(lengths > self.seq_len))
        first_row, last_row = (starts + n_tail) // self.seq_len, (ends - 1 + n_tail) // self.seq_len
        self.stats.docs_cut += int(np.count_nonzero(first_row != last_row))
        stream = np.empty(n_tail + int(ends[-1]), dtype=np.int32)
        stream[:n_tail] = self._tail
        new = stream[n_tail:]
        body = np.ones(len(new), dtype=bool)
        for pad in pads.tolist():  # padding runs from `pad` to the end of its row
            row_end = pad + self.seq_len - (n_tail + pad) % self.seq_len
            body[pad:row_end] = False
            new[pad:row_end] = self.pad_id
        body[starts] = body[ends - 1] = False
        new[body] = np.concatenate(docs)
        new[starts] = self.bos_id
        new[ends - 1] = self.eos_id
        doc_starts = np.concatenate([self._tail_starts, starts + n_tail])
        doc_spans = self._tail_spans
        if spans is not None:
            doc_spans = np.concatenate([doc_spans, np.asarray(spans, dtype=np.int64).reshape(-1, 2)
                                        + (starts + n_tail)[:, None]])

        cut = len(stream) // self.seq_len * self.seq_len
        self._tail = stream[cut:].copy()
        self._tail_starts = doc_starts[doc_starts >= cut] - cut
        self._tail_spans = doc_spans[doc_spans[:, 0] >= cut] - cut
        if cut == 0:
            return None
        return self._rows(stream[:cut], doc_starts[doc_starts < cut], pads + n_tail,
                          doc_spans[doc_spans[:, 0] < cut])

    def _place(self, lengths: np.ndarray, n_tail: int, whole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each document's start after the tail, and where padding starts (a whole document
        that does not fit in the rest of its row moves to the next)."""
        if (lengths[whole] > self.seq_len).any():
            raise ValueError(f"a document of {lengths[whole].max()} tokens with BOS/EOS does not "
                             f"fit in a row of {self.seq_len}")
        starts = np.empty(len(lengths), dtype=np.int64)
        pads = []
        pos = 0
        fill = n_tail  # the tail is the row being filled
        for i, (length, keep_whole) in enumerate(zip(lengths.tolist(), whole.tolist())):
            if keep_whole and fill + length > self.seq_len:
                pads.append(pos)
                pos += self.seq_len - fill
                fill = 0
            starts[i] = pos
            pos += length
            fill = (fill + length) % self.seq_len
        return starts, np.array(pads, dtype=np.int64)

    def _add_best_fit(self, docs: Sequence[np.ndarray], lengths: np.ndarray) -> pa.RecordBatch | None:
        for doc, length in zip(docs, lengths.tolist()):
            framed = np.empty(length, dtype=np.int32)
            framed[0], framed[1:-1], framed[-1] = self.bos_id, doc, self.eos_id
            if length > self.seq_len:  # full rows now, the rest placed with the others
                self.stats.docs_long += 1
                self.stats.docs_cut += 1
                full = length // self.seq_len * self.seq_len
                self._full.append(framed[:full])
                framed = framed[full:]
            if len(framed):
                self._items.append(framed)
            self._waiting += length
        if self._waiting < self.window_rows * self.seq_len:
            return None
        return self._flush_best_fit()

    def _flush_best_fit(self) -> pa.RecordBatch | None:
        """Rows of the waiting full rows and items: each long document's remainder opens a
        row of its own (a row whose offset 0 is not a document start is how a loader tells
        a continuation; elsewhere it would run on from the document before it); then the
        whole documents by best-fit decreasing; each row's items in arrival order after
        its remainder, then padding."""
        items, full = self._items, self._full
        self._items, self._full, self._waiting = [], [], 0
        rows: list[list[int]] = []
        room: list[tuple[int, int]] = []  # (free tokens, row), sorted
        continued = [k for k in range(len(items)) if items[k][0] != self.bos_id]
        for k in continued:
            rows.append([k])
            if free := self.seq_len - len(items[k]):
                bisect.insort(room, (free, len(rows) - 1))
        whole = [k for k in range(len(items)) if items[k][0] == self.bos_id]
        for k in sorted(whole, key=lambda k: -len(items[k])):  # stable: ties by arrival
            at = bisect.bisect_left(room, (len(items[k]), -1))
            if at == len(room):
                rows.append([k])
                free, row = self.seq_len - len(items[k]), len(rows) - 1
            else:
                free, row = room.pop(at)
                rows[row].append(k)
                free -= len(items[k])
            if free:
                bisect.insort(room, (free, row))
        n_full = sum(len(f) for f in full) // self.seq_len
        flat = np.full((n_full + len(rows)) * self.seq_len, self.pad_id, dtype=np.int32)
        starts, pads = [], []
        pos = 0
        for chunk in full:  # a long document's first row opens with its BOS
            starts.append(pos)
            flat[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        for row in rows:
            flat_row = pos  # rows start on row boundaries
            for k in sorted(row, key=lambda k: (items[k][0] == self.bos_id, k)):  # remainder first
                if items[k][0] == self.bos_id:
                    starts.append(pos)
                flat[pos : pos + len(items[k])] = items[k]
                pos += len(items[k])
            if pos - flat_row < self.seq_len:
                pads.append(pos)
                pos = flat_row + self.seq_len
        if not len(flat):
            return None
        return self._rows(flat, np.array(starts, dtype=np.int64), np.array(pads, dtype=np.int64),
                          np.empty((0, 2), dtype=np.int64))

    def finish(self) -> pa.RecordBatch | None:
        """The final partial row, padded (or dropped and counted); with best fit, the rows
        of the documents still waiting."""
        if self.best_fit:
            return self._flush_best_fit()
        n = len(self._tail)
        if n == 0:
            return None
        tail, starts, spans = self._tail, self._tail_starts, self._tail_spans
        self._tail = np.empty(0, dtype=np.int32)
        self._tail_starts = np.empty(0, dtype=np.int64)
        self._tail_spans = np.empty((0, 2), dtype=np.int64)
        if self.remainder == "drop":
            self.stats.dropped_tokens += n
            return None
        row = np.full(self.seq_len, self.pad_id, dtype=np.int32)
        row[:n] = tail
        return self._rows(row, starts, np.array([n]), spans)

    def _rows(self, flat: np.ndarray, starts: np.ndarray, pads: np.ndarray,
              spans: np.ndarray) -> pa.RecordBatch:
        """Rows from `flat` (whole rows), given the offsets in it of the documents' BOS, of
        the padding that ends rows, and of the answer spans ((k, 2) [start, end) pairs)."""
        n_rows = len(flat) // self.seq_len
        offsets = np.searchsorted(starts // self.seq_len, np.arange(n_rows + 1)).astype(np.int32)
        num_tokens = np.full(n_rows, self.seq_len, dtype=np.int32)
        num_tokens[pads // self.seq_len] = pads % self.seq_len
        in_row = (starts % self.seq_len).astype(np.int32)
        real = int(num_tokens.sum(dtype=np.int64))
        self.stats.tokens += real
        self.stats.pad_tokens += n_rows * self.seq_len - real
        self.stats.sequences += n_rows
        columns = [
            pa.FixedSizeListArray.from_arrays(pa.array(flat), self.seq_len),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(in_row)),
            pa.array(num_tokens),
        ]
        if self.loss_spans:
            row_of_span = spans[:, 0] // self.seq_len
            span_offsets = 2 * np.searchsorted(row_of_span, np.arange(n_rows + 1)).astype(np.int32)
            in_row_spans = (spans - (row_of_span * self.seq_len)[:, None]).astype(np.int32).ravel()
            columns.append(pa.ListArray.from_arrays(pa.array(span_offsets), pa.array(in_row_spans)))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


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
    packer = SequencePacker(pack.seq_len, tok.bos_id, tok.eos_id, tok.eos_id, pack.remainder, stats,
                            best_fit=pack.packing == "best_fit", window_rows=pack.best_fit_window)
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
        stats.fim_tokens += sum(len(ids) + 2 for ids, mode in zip(enc.ids, enc.modes.tolist()) if mode)
        rows = packer.add(enc.ids, whole=enc.modes > 0)
        if rows is not None:
            yield rows
    rows = packer.finish()
    if rows is not None:
        yield rows
