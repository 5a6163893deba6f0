"""A deterministic, resumable, mixable stream of training batches over shard directories.

The global stream. Sample k (k = 0, 1, 2, … over the whole run) is a pure function
of (seed, k):

* `Mixture` picks its source and its index c within that source. Each source gets a
  share of the stream given by its weight, spread evenly: a binary tree over the
  sources where every node splits its samples between its two halves Bresenham-style
  (sample i goes left iff floor((i+1)·a + ½) > floor(i·a + ½)). Every prefix of the
  stream is within about one sample per tree level of the target counts, and a global
  batch of G samples holds exactly w·G samples of a source whenever w·G is whole.
  Rows are fixed-length, so sample shares are token shares.
* `Permutation` turns c into a row: epoch e = c // rows, and a seeded Feistel
  permutation of range(rows) keyed by (seed, source, e) — a new order every epoch,
  O(1) memory however many rows, no table to cache.

The held-out slice (`held_out_rows`, for a held-out loss). `RowSplit` sets aside that
many rows of every source, in runs of HELD_OUT_RUN consecutive rows: the source's
whole runs are ordered by a Feistel permutation keyed by the source's name alone (not
the seed: runs with other seeds are judged on the same rows, and a smaller slice is
part of a larger one), the first held_out_rows / HELD_OUT_RUN runs are held out, and
the stream above reads only the other rows (c indexes them; the rows of the last,
partial run always train). So the slice never enters training in any epoch, is the
same for any world size, micro-batch size, worker count or resume, and costs no table.
Runs, rather than single rows, because packing cuts documents across neighbouring
rows: only documents crossing a run's two edges are seen in part by both sides.
`held_out_batches()` reads the slice.

Who reads what. Global micro-batch g holds samples g·b … g·b+b-1 (b = micro-batch
size). Rank r of W reads g = m·W + r for its m-th micro-batch; its DataLoader worker
i of n reads the runs of consecutive m numbered i, i+n, … (one run per message; the
DataLoader's round robin gives them back in order). So each (rank, worker) reads a
disjoint strided slice, and no sample is repeated or skipped within an epoch of a
source, for any W and n.

State. `state_dict()` is one integer, the global samples consumed, plus a fingerprint
of everything that decides the stream (shard checksums, weights, seed, modes). A
resume with another world size, micro-batch size or number of workers continues the
same global stream, as long as the resume point is a multiple of W·b (a step
boundary is). Loading state after iteration began, or state from another stream, is
an error, never a silent restart.

Each micro-batch is a dict of tensors (int32: cast `labels` to int64 on the device):
`input_ids` (b, L); `labels` (b, L), the next token, -100 where there is none (row
end, padding, the first token of the next document, and outside answers in
`answers_only` mode); `position_ids` (b, L), restarting at each document start (a row
that opens mid-document counts from 0), or 0…L-1 with `long_context`; `cu_seqlens`
(segments+1,) segment boundaries in the flattened batch, for variable-length
attention; `max_seqlen`; `source` and `row` (b,), where each row came from (int64);
`index` (g).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from math import isfinite, lcm
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from codemill.train_hooks.shards import Chunk, ShardReader, open_shard_dirs

STATE_VERSION = "codemill-loader/2"
IGNORE = -100  # the label torch's cross_entropy skips by default
_BLOCK = 128  # units of micro-batches whose sample indices are computed in one call
_MESSAGE_BYTES = 1 << 20  # about this many token bytes per worker -> trainer message
_MAX_UNITS = 1 << 20  # weight quantum: keeps i·units inside int64 for i < 2^42 samples
HELD_OUT_RUN = 32  # consecutive rows held out together (module docstring)


class LoaderStateError(RuntimeError):
    pass


class HeldOutError(ValueError):
    """A held-out slice a source cannot give."""


# --- the global sample index ----------------------------------------------------------

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-mixing bijection of 64-bit words."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _keys(*parts: object, n: int = 4) -> list[np.uint64]:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8 * n).digest()
    return [np.uint64(int.from_bytes(digest[8 * i : 8 * i + 8], "little")) for i in range(n)]


class Permutation:
    """A seeded bijection of range(n): a 4-round Feistel network on the smallest even
    number of bits that holds n, with cycle walking (re-encrypt until the value is < n;
    under 4 rounds on average)."""

    def __init__(self, n: int, *key: object) -> None:
        if n < 1:
            raise ValueError("a permutation needs n >= 1")
        self.n = n
        self._half = np.uint64(max(1, ((n - 1).bit_length() + 1) // 2))
        self._mask = np.uint64((1 << int(self._half)) - 1)
        self._round_keys = _keys("permutation", *key)

    def __call__(self, i: np.ndarray) -> np.ndarray:
        x = self._encrypt(np.asarray(i, dtype=np.uint64))
        out_of_range = np.flatnonzero(x >= self.n)
        while len(out_of_range):
            x[out_of_range] = self._encrypt(x[out_of_range])
            out_of_range = out_of_range[x[out_of_range] >= self.n]
        return x.astype(np.int64)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for k in self._round_keys:
            left, right = right, left ^ (_mix64(right ^ k) & self._mask)
        return (left << self._half) | right


def _units(weights: Sequence[float]) -> list[int]:
    """Positive weights as small integers with the same ratios (exact for simple ratios
    like 0.85/0.08/0.07 or 1/3, else to 2^-20), so the mixing is exact integer math."""
    if not weights or any(not isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"mixing weights must be positive and finite, got {list(weights)}")
    total = sum(weights)
    fractions = [Fraction(w / total).limit_denominator(1 << 12) for w in weights]
    den = lcm(*(f.denominator for f in fractions))
    if den <= _MAX_UNITS:
        return [int(f * den) for f in fractions]
    return [max(1, round(w / total * _MAX_UNITS)) for w in weights]


class Mixture:
    """Sample k -> (source, index within the source): a pure function of k (module docstring)."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.units = _units(weights)
        self.shares = [u / sum(self.units) for u in self.units]
        self._root = self._build(list(range(len(self.units))))

    def _build(self, sources: list[int]) -> int | tuple:
        if len(sources) == 1:
            return sources[0]
        half = len(sources) // 2
        left, right = sources[:half], sources[half:]
        u_left = sum(self.units[s] for s in left)
        u_all = u_left + sum(self.units[s] for s in right)
        return (self._build(left), self._build(right), u_left, u_all)

    def __call__(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(k, dtype=np.int64)
        if len(k) and int(k.max()) >= 1 << 42:
            raise OverflowError("sample index beyond 2^42")
        source, index = np.empty_like(k), np.empty_like(k)
        self._assign(self._root, k, np.arange(len(k)), source, index)
        return source, index

    def _assign(self, node, i: np.ndarray, where: np.ndarray, source, index) -> None:
        if isinstance(node, int):
            source[where], index[where] = node, i
            return
        left, right, u_left, u_all = node
        before = (2 * i * u_left + u_all) // (2 * u_all)  # left samples among the first i
        go_left = (2 * (i + 1) * u_left + u_all) // (2 * u_all) > before
        self._assign(left, before[go_left], where[go_left], source, index)
        go_right = ~go_left
        self._assign(right, (i - before)[go_right], where[go_right], source, index)

    def counts(self, n: int) -> list[int]:
        """Samples of each source among the first n of the stream."""
        out = [0] * len(self.units)

        def walk(node, i: int) -> None:
            if isinstance(node, int):
                out[node] = i
                return
            left, right, u_left, u_all = node
            before = (2 * i * u_left + u_all) // (2 * u_all)
            walk(left, before)
            walk(right, i - before)

        walk(self._root, n)
        return out


class RowSplit:
    """A source's rows: a held-out slice of `held_out` rows in runs of HELD_OUT_RUN,
    and the training rows (module docstring)."""

    def __init__(self, rows: int, held_out: int, name: str) -> None:
        if held_out % HELD_OUT_RUN or not 0 <= held_out <= rows // 2:
            raise HeldOutError(
                f"{name}: cannot hold out {held_out} of its {rows} rows (held-out rows come in "
                f"runs of {HELD_OUT_RUN} and may be at most half of a source)"
            )
        self.rows = rows
        self.held_runs = held_out // HELD_OUT_RUN
        self.training_rows = rows - held_out
        runs = rows // HELD_OUT_RUN
        self._runs = Permutation(runs, "held-out", name) if self.held_runs else None
        self._training_in_runs = (runs - self.held_runs) * HELD_OUT_RUN

    def held_out(self) -> np.ndarray:
        """The held-out rows, ascending."""
        if self._runs is None:
            return np.empty(0, dtype=np.int64)
        runs = np.sort(self._runs(np.arange(self.held_runs)))
        return (runs[:, None] * HELD_OUT_RUN + np.arange(HELD_OUT_RUN)).ravel()

    def training(self, t: np.ndarray) -> np.ndarray:
        """Training row number t (0 <= t < training_rows) -> its row in the source."""
        if self._runs is None:
            return t
        in_runs = t < self._training_in_runs
        run = self._runs(self.held_runs + t[in_runs] // HELD_OUT_RUN)
        row = t + (self.rows - self.training_rows)  # the partial run at the end
        row[in_runs] = run * HELD_OUT_RUN + t[in_runs] % HELD_OUT_RUN
        return row


class GlobalIndex:
    """Sample k -> (source, row), from (seed, k) alone; held-out rows never come up."""

    def __init__(self, splits: Sequence[RowSplit], weights: Sequence[float], seed: int) -> None:
        self.splits = list(splits)
        self.seed = seed
        self.mixture = Mixture(weights)
        self._perms: OrderedDict[tuple[int, int], Permutation] = OrderedDict()

    def __call__(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        source, c = self.mixture(k)
        row = np.empty_like(c)
        for s in np.unique(source):
            at = np.flatnonzero(source == s)
            split = self.splits[s]
            epoch, pos = np.divmod(c[at], split.training_rows)
            for e in np.unique(epoch):
                sel = epoch == e
                row[at[sel]] = split.training(self._permutation(int(s), int(e))(pos[sel]))
        return source, row

    def _permutation(self, source: int, epoch: int) -> Permutation:
        key = (source, epoch)
        if key not in self._perms:
            self._perms[key] = Permutation(self.splits[source].training_rows, self.seed, source, epoch)
            if len(self._perms) > 4 * len(self.splits):
                self._perms.popitem(last=False)
        self._perms.move_to_end(key)
        return self._perms[key]


# --- the dataset ------------------------------------------------------------------------


class ShardDataset(IterableDataset):
    """Micro-batches of the global stream for one rank (see the module docstring).

    `weights`: one per directory (any positive scale), or None for each directory's
    natural share (its training rows). `held_out_rows`: rows of each directory kept out
    of the stream for a held-out loss (module docstring). `samples`: stop after this
    many global samples (a multiple of world_size × micro_batch_size, so every rank gets
    as many batches and none waits at the end); None streams on forever, epoch after
    epoch. `dirs` may be s3://, gs://, hdfs:// URIs, downloaded once into `cache_dir`
    (codemill.storage.cache); the state knows sources by name and checksums, so it
    resumes from any copy.
    """

    def __init__(
        self,
        dirs: Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        *,
        micro_batch_size: int = 8,
        seed: int = 0,
        long_context: bool = False,
        answers_only: bool = False,
        held_out_rows: int = 0,
        samples: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        verify: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        self.readers: list[ShardReader] = open_shard_dirs(dirs, verify, cache_dir)
        self.names = [r.name for r in self.readers]
        self.splits = [RowSplit(r.rows, held_out_rows, r.name) for r in self.readers]
        if weights is None:
            weights = [split.training_rows for split in self.splits]
        if len(weights) != len(self.readers):
            raise ValueError(f"{len(weights)} weights for {len(self.readers)} shard directories")
        if answers_only and (plain := [r.name for r in self.readers if not r.has_loss_spans]):
            raise ValueError(
                f"answers_only needs instruction shards (loss_spans); {plain} lack them"
            )
        if rank is None or world_size is None:
            distributed = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if distributed else 0
            world_size = dist.get_world_size() if distributed else 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.micro_batch_size, self.rank, self.world_size = micro_batch_size, rank, world_size
        self.seq_len = self.readers[0].seq_len
        self.vocab_size = self.readers[0].vocab_size
        self.long_context, self.answers_only = long_context, answers_only
        if samples is not None and samples % self.samples_per_round:
            raise ValueError(
                f"samples={samples} is not a multiple of world_size × micro_batch_size "
                f"= {self.samples_per_round}: ranks would get unequal numbers of batches"
            )
        self.samples = samples
        self.index = GlobalIndex(self.splits, weights, seed)
        self.config = {
            "version": STATE_VERSION,
            "seed": seed,
            "sources": {r.name: r.identity() for r in self.readers},
            "order": list(self.names),  # the stream depends on it; the dicts are sorted
            "weight_units": dict(zip(self.names, self.index.mixture.units)),
            "long_context": long_context,
            "answers_only": answers_only,
        }
        if held_out_rows:  # absent without a slice: such a stream and its states are as before
            self.config["held_out"] = {"rows": held_out_rows, "run": HELD_OUT_RUN}
        blob = json.dumps(self.config, sort_keys=True).encode()
        self.fingerprint = hashlib.sha256(blob).hexdigest()
        self._consumed = 0  # global samples delivered to the trainer
        self._started = False
        self._positions = np.arange(micro_batch_size * self.seq_len, dtype=np.int32)
        self._row_starts = np.arange(0, len(self._positions) + 1, self.seq_len, dtype=np.int32)

    @property
    def samples_per_round(self) -> int:
        """Global samples in one micro-batch of every rank."""
        return self.world_size * self.micro_batch_size

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"samples": self._consumed, "fingerprint": self.fingerprint, "config": self.config}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._started:
            raise LoaderStateError(
                "load_state_dict after iteration began: the batches already read would "
                "not be the ones the state describes; load state before iterating"
            )
        if state.get("fingerprint") != self.fingerprint:
            raise LoaderStateError(
                "the state is from another stream: "
                + _describe_difference(state.get("config"), self.config)
            )
        samples = int(state["samples"])
        if samples % self.samples_per_round:
            raise LoaderStateError(
                f"cannot resume at sample {samples} with world_size {self.world_size} × "
                f"micro_batch_size {self.micro_batch_size}: not a multiple of "
                f"{self.samples_per_round} (resume at a step boundary)"
            )
        self._consumed = samples

    def counts(self, samples: int | None = None) -> dict[str, int]:
        """Samples (= rows, = seq_len tokens each) taken from each source so far."""
        n = self._consumed if samples is None else samples
        return dict(zip(self.names, self.index.mixture.counts(n)))

    def shares(self, samples: int | None = None) -> dict[str, float]:
        """Realised share of each source over the samples consumed (or the first `samples`)."""
        counts = self.counts(samples)
        total = sum(counts.values()) or 1
        return {name: c / total for name, c in counts.items()}

    def epochs(self, samples: int | None = None) -> dict[str, float]:
        """How many passes over each source's training rows the samples consumed amount to."""
        return {n: c / split.training_rows for (n, c), split in zip(self.counts(samples).items(), self.splits)}

    def _delivered(self, g: int) -> None:
        # Idempotent: the in-process iterator and ShardLoader may both report a batch.
        self._consumed = max(self._consumed, (g // self.world_size + 1) * self.samples_per_round)

    # -- iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any] | list[Rows]]:
        """Batches in the main process; in a DataLoader worker, lists of `Rows` for ShardLoader.

        A worker sends only the gathered rows and their boundaries (about a third of
        the batch's bytes), several micro-batches per message, since each DataLoader
        message costs the trainer's process far more than its bytes do; ShardLoader
        builds labels and positions on arrival.
        """
        info = get_worker_info()
        if info is None:
            self._started = True
            for rows in self._rows(0, 1, 1):
                self._delivered(rows.index)
                yield self.expand(rows)
            return
        per_message = max(1, _MESSAGE_BYTES // (4 * self.micro_batch_size * self.seq_len))
        bundle: list[Rows] = []
        for rows in self._rows(info.id, info.num_workers, per_message):
            bundle.append(rows)
            if len(bundle) == per_message:
                yield bundle
                bundle = []
        if bundle:
            yield bundle

    def _rows(self, worker: int, workers: int, per_unit: int) -> Iterator[Rows]:
        """This rank's micro-batches m, in units of `per_unit` consecutive ones; this
        worker takes units worker, worker + workers, … (the DataLoader's round robin)."""
        b = self.micro_batch_size
        chunks = [r.chunks()[0] for r in self.readers]  # opens the maps in this process
        first = self._consumed // self.samples_per_round
        stop = None if self.samples is None else self.samples // self.samples_per_round
        unit = worker
        while stop is None or first + unit * per_unit < stop:
            units = np.arange(unit, unit + _BLOCK * workers, workers, dtype=np.int64)
            ms = (first + units[:, None] * per_unit + np.arange(per_unit)).ravel()
            if stop is not None:
                ms = ms[ms < stop]
            gs = ms * self.world_size + self.rank
            source, row = self.index((gs[:, None] * b + np.arange(b)).ravel())
            chunk, local = self._locate(source, row)
            for j, g in enumerate(gs.tolist()):
                part = slice(j * b, (j + 1) * b)
                yield self._gather(g, chunks, source[part], row[part], chunk[part], local[part])
            unit += _BLOCK * workers

    def _locate(self, source: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk, row inside the chunk) of each (source, row)."""
        chunk, local = np.empty_like(row), np.empty_like(row)
        for s in np.unique(source):
            at = source == s
            chunk[at], local[at] = self.readers[s].locate(row[at])
        return chunk, local

    def held_out_batches(self) -> Iterator[dict[str, Any]]:
        """This rank's share of every source's held-out rows, in micro-batches like the
        training ones (global micro-batch g = m·W + r, as in the stream). Every rank gets
        as many: the last ones are filled up with rows whose labels are all ignored, so
        that collective forward passes (FSDP) stay in step. Reads no training state."""
        held = [split.held_out() for split in self.splits]
        source = np.concatenate([np.full(len(rows), s, dtype=np.int64) for s, rows in enumerate(held)])
        row = np.concatenate(held)
        real = len(row)
        if real == 0:
            return
        filled = -(-real // self.samples_per_round) * self.samples_per_round
        source = np.concatenate([source, np.full(filled - real, source[0])])
        row = np.concatenate([row, np.full(filled - real, row[0])])
        chunk, local = self._locate(source, row)
        chunks = [r.chunks()[0] for r in self.readers]
        b = self.micro_batch_size
        for m in range(filled // self.samples_per_round):
            g = m * self.world_size + self.rank
            part = slice(g * b, (g + 1) * b)
            batch = self.expand(self._gather(g, chunks, source[part], row[part], chunk[part], local[part]))
            batch["labels"][np.arange(g * b, (g + 1) * b) >= real] = IGNORE
            yield batch

    def _gather(
        self,
        g: int,
        chunks: list[list[Chunk]],
        source: np.ndarray,
        row: np.ndarray,
        chunk: np.ndarray,
        local: np.ndarray,
    ) -> Rows:
        b, L = self.micro_batch_size, self.seq_len
        ids = torch.empty((b, L), dtype=torch.int32).numpy()  # torch's allocator: faster here
        # Segment boundaries in the flattened batch: each row's start (unless a document
        # starts there anyway), its document starts, and the batch's end.
        bounds, counts, padded, spans = [], [], [], []
        for j, (s, c, r) in enumerate(zip(source.tolist(), chunk.tolist(), local.tolist())):
            ck = chunks[s][c]
            ids[j] = ck.tokens[r]
            if (n := int(ck.num_tokens[r])) < L:
                padded.append((j, n))
            lo, hi = ck.start_offsets[r : r + 2].tolist()
            opens_mid_document = hi == lo or ck.start_values[lo] != 0
            if opens_mid_document:
                bounds.append(_ZERO)
            bounds.append(ck.start_values[lo:hi])
            counts.append(hi - lo + opens_mid_document)
            if self.answers_only:
                lo, hi = ck.span_offsets[r : r + 2].tolist()
                spans.append(ck.span_values[lo:hi])
        bounds.append(_ZERO)
        counts.append(1)
        cu_seqlens = np.concatenate(bounds)  # offsets inside rows; add each row's start
        cu_seqlens += np.repeat(self._row_starts, counts)
        return Rows(g, ids, cu_seqlens, padded, source.copy(), row.copy(), spans)

    def expand(self, rows: Rows) -> dict[str, Any]:
        """The batch tensors from gathered rows (the module docstring lists them)."""
        b, L = self.micro_batch_size, self.seq_len
        ids, cu_seqlens = rows.ids, rows.cu_seqlens
        pair = torch.empty((2, b, L), dtype=torch.int32)
        labels, positions = pair.numpy()
        labels[:, :-1] = ids[:, 1:]
        labels[:, -1] = IGNORE
        if self.long_context:
            positions[:] = self._positions[:L]
            cu_seqlens = self._row_starts
        else:
            lengths = np.diff(cu_seqlens)
            np.subtract(
                self._positions, np.repeat(cu_seqlens[:-1], lengths), out=positions.reshape(-1)
            )
            # No token learns to predict the first token of the next document.
            # (At row starts and the end that is the last column, masked anyway.)
            labels.reshape(-1)[cu_seqlens[1:] - 1] = IGNORE
        for j, n in rows.padded:  # the padded tail of a stream
            labels[j, n - 1 :] = IGNORE
        if self.answers_only:
            _keep_answers(labels, rows.spans)
        labels_t, positions_t = pair.unbind(0)
        return {
            "input_ids": torch.from_numpy(ids),
            "labels": labels_t,
            "position_ids": positions_t,
            "cu_seqlens": torch.from_numpy(cu_seqlens),
            "max_seqlen": L if self.long_context else int(lengths.max()),
            "source": torch.from_numpy(rows.source),
            "row": torch.from_numpy(rows.row),
            "index": rows.index,
        }


_ZERO = np.zeros(1, dtype=np.int32)


class Rows(NamedTuple):
    """One micro-batch as gathered: what a worker sends to the trainer's process."""

    index: int  # global micro-batch number g
    ids: np.ndarray  # (b, L) int32
    cu_seqlens: np.ndarray  # int32 boundaries of rows and documents in the flattened batch
    padded: list[tuple[int, int]]  # (row, real tokens) of rows with a padded tail
    source: np.ndarray  # (b,) source of each row
    row: np.ndarray  # (b,) its row number within the source
    spans: list[np.ndarray]  # answers_only: flattened [start, end) answer spans per row


def _keep_answers(labels: np.ndarray, spans: list[np.ndarray]) -> None:
    """Keep a label only where the token it predicts lies in an answer span."""
    keep = np.zeros(labels.shape, dtype=bool)
    for j, pairs in enumerate(spans):
        for start, end in pairs.reshape(-1, 2).tolist():
            keep[j, max(start - 1, 0) : end - 1] = True
    labels[~keep] = IGNORE


def _describe_difference(saved: Any, current: Mapping[str, Any]) -> str:
    if not isinstance(saved, Mapping):
        return "the state carries no config (not a ShardDataset state?)"
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if "sources" in keys and isinstance(saved.get("sources"), Mapping):
        old, new = saved["sources"], current["sources"]
        changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        return f"{', '.join(keys)} differ (sources changed: {changed})"
    return f"{', '.join(keys) or 'the fingerprint'} differ(s)"


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


class ShardLoader(DataLoader):
    """The way to iterate a ShardDataset: a DataLoader that keeps the dataset's state current.

    With workers, the dataset object in this process never sees the batches; this
    loader reports each one it hands out, so `state_dict()` is right for any
    `num_workers`. It checks that batches arrive in stream order, and builds labels
    and positions from the rows workers send. With no workers it reads the dataset
    directly, without the DataLoader's per-batch machinery.
    """

    def __init__(self, dataset: ShardDataset, num_workers: int = 0, **kwargs: Any) -> None:
        if kwargs.get("persistent_workers"):
            # Workers copy the dataset's position when forked: each pass needs new ones.
            raise ValueError("ShardLoader cannot keep workers between passes")
        super().__init__(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, **kwargs
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds: ShardDataset = self.dataset
        ds._started = True
        expected = ds._consumed // ds.samples_per_round * ds.world_size + ds.rank
        source = iter(ds) if self.num_workers == 0 else super().__iter__()
        for item in source:
            for batch in map(ds.expand, item) if isinstance(item, list) else (item,):
                if batch["index"] != expected:
                    raise LoaderStateError(f"batch {batch['index']} arrived, expected {expected}")
                ds._delivered(expected)
                expected += ds.world_size
                yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)
