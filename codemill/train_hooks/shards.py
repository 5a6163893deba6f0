"""Reading shard directories for training: manifest checks and zero-copy row access.

A shard directory (codemill.tokenize.shards) holds Arrow IPC *stream* files. The
stream format has no footer, so the row index is built by walking the stream's
record batches once over a memory map: only message headers are parsed, and every
column buffer stays a view into the map. A row is then a slice of a batch's flat
int32 token buffer; the one copy is the one into the batch tensor.

Instruction shards add one column, `loss_spans` (answer-token spans; see
codemill.tokenize.shard_format, which owns both row schemas).

A directory may be a local path or an s3://, gs://, hdfs:// or file:// URI, and a
pipeline output folder with a commit record; remote ones are read from a local copy
(codemill.storage.cache), so rows are always memory-mapped from the local disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from codemill.storage import display, is_local, local_path, to_uri
from codemill.storage import name as uri_name
from codemill.storage.cache import cached_shard_dir
from codemill.tokenize.shard_format import (
    LOSS_SPANS,
    ShardError,
    ShardMismatch,
    instruction_schema,
    read_manifest,
    sequence_schema,
    verify_shards,
)


@dataclass(frozen=True)
class Chunk:
    """One record batch as numpy views into the memory map."""

    tokens: np.ndarray  # (rows, seq_len) int32
    start_offsets: np.ndarray  # (rows + 1,) into start_values
    start_values: np.ndarray  # BOS offsets inside each row
    num_tokens: np.ndarray  # (rows,) int32
    span_offsets: np.ndarray | None  # loss_spans, same layout as doc_starts
    span_values: np.ndarray | None


def source_name(shard_dir: str | os.PathLike) -> str:
    """A shard directory's name as given, not its committed attempt's nor its cache
    entry's: mixing weights and loader state know a source by it, wherever it is read."""
    uri = to_uri(shard_dir)
    return local_path(uri).name if is_local(uri) else uri_name(uri)


class ShardReader:
    """One shard directory: its manifest, and random access to rows once opened.

    Construction reads only the manifest and the first file's schema (cheap, and
    safe before a fork), after downloading a remote directory into `cache_dir`; with
    `verify`, it first checks every file against the manifest (`verify_shards`, which
    takes and extends `digests`) and raises ShardMismatch naming what differs. The
    memory maps are opened on first row access, again in any process that did not
    open them itself (DataLoader workers), because maps and Arrow readers are not
    meant to cross a fork.
    """

    def __init__(self, shard_dir: str | os.PathLike, verify: bool = False, cache_dir: Path | None = None,
                 digests: dict[str, str] | None = None) -> None:
        self.name = source_name(shard_dir)
        self.location = display(to_uri(shard_dir))  # as given, for messages
        self.dir = cached_shard_dir(shard_dir, cache_dir)
        self.manifest = read_manifest(self.dir)
        if verify and (problems := verify_shards(self.dir, digests)):
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ShardMismatch(f"{self.location}: the shards do not match their manifest: "
                                + "; ".join(problems[:3]) + more)
        self.seq_len: int = self.manifest["seq_len"]
        self.files = [s["file"] for s in self.manifest["shards"]]
        self.file_rows = [s["rows"] for s in self.manifest["shards"]]
        self.rows = sum(self.file_rows)
        if not self.files or self.rows == 0:
            raise ShardError(f"{self.dir}: the manifest lists no rows")
        for s in self.manifest["shards"]:
            path = self.dir / s["file"]
            if not path.exists():
                raise ShardError(f"{path}: listed in the manifest but missing")
            if path.stat().st_size != s["bytes"]:
                raise ShardError(
                    f"{path}: {path.stat().st_size} bytes, the manifest says {s['bytes']}"
                )
        self.schema = _read_schema(self.dir / self.files[0])
        self.has_loss_spans = LOSS_SPANS in self.schema.names
        expected = (
            instruction_schema(self.seq_len)
            if self.has_loss_spans
            else sequence_schema(self.seq_len)
        )
        if not self.schema.equals(expected):
            raise ShardError(f"{self.dir / self.files[0]}: schema {self.schema} is not {expected}")
        self._pid: int | None = None
        self._chunks: list[Chunk] = []
        self._chunk_starts = np.zeros(1, dtype=np.int64)

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["tokenizer"]["vocab_size"]

    def identity(self) -> dict[str, Any]:
        """What makes this data this data: for fingerprints of loader state."""
        return {
            "seq_len": self.seq_len,
            "tokenizer": self.tokenizer_sha256,
            "shards": [[s["file"], s["rows"], s["sha256"]] for s in self.manifest["shards"]],
        }

    def chunks(self) -> tuple[list[Chunk], np.ndarray]:
        """All record batches and the first row of each (opened lazily, per process)."""
        if self._pid != os.getpid():
            self._open()
        return self._chunks, self._chunk_starts

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers -> (chunk index, row inside the chunk), vectorised."""
        _, starts = self.chunks()
        chunk = np.searchsorted(starts, rows, side="right") - 1
        return chunk, rows - starts[chunk]

    def _open(self) -> None:
        chunks, starts = [], [0]
        for name, rows in zip(self.files, self.file_rows):
            path = self.dir / name
            file_chunks = _map_chunks(path, self.seq_len, self.has_loss_spans)
            if sum(len(c.num_tokens) for c in file_chunks) != rows:
                raise ShardError(f"{path}: row count differs from the manifest ({rows})")
            for c in file_chunks:
                chunks.append(c)
                starts.append(starts[-1] + len(c.num_tokens))
        self._chunks, self._chunk_starts = chunks, np.asarray(starts, dtype=np.int64)
        self._pid = os.getpid()


def _read_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).schema


def _map_chunks(path: Path, seq_len: int, spans: bool) -> list[Chunk]:
    # The memory map stays alive as long as any buffer view into it does.
    reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    out = []
    for batch in reader:
        ids = batch.column("input_ids").flatten()  # zero-copy; honours a slice offset
        starts = batch.column("doc_starts")
        span_offsets = span_values = None
        if spans:
            col = batch.column(LOSS_SPANS)
            span_offsets, span_values = _list_views(col)
        start_offsets, start_values = _list_views(starts)
        out.append(
            Chunk(
                tokens=ids.to_numpy(zero_copy_only=True).reshape(-1, seq_len),
                start_offsets=start_offsets,
                start_values=start_values,
                num_tokens=batch.column("num_tokens").to_numpy(zero_copy_only=True),
                span_offsets=span_offsets,
                span_values=span_values,
            )
        )
    return out


def _list_views(col: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    offsets = col.offsets.to_numpy(zero_copy_only=True)
    return offsets, col.values.to_numpy(zero_copy_only=True)


def open_shard_dirs(
    dirs: Sequence[str | os.PathLike], verify: bool = False, cache_dir: Path | None = None
) -> list[ShardReader]:
    """Open several shard directories that one model can train on together (remote ones
    through the cache in `cache_dir`, default `codemill.storage.cache.default_cache_dir()`).

    Loud errors when they cannot be mixed: another tokenizer (ids would mean other
    text), another sequence length, or instruction and plain shards side by side.
    """
    if not dirs:
        raise ShardError("no shard directories given")
    readers = [ShardReader(d, verify, cache_dir) for d in dirs]
    first = readers[0]
    for r in readers[1:]:
        if r.tokenizer_sha256 != first.tokenizer_sha256:
            raise ShardError(
                f"{r.location} was tokenized with another tokenizer than {first.location} "
                f"(sha256 {r.tokenizer_sha256[:12]} vs {first.tokenizer_sha256[:12]})"
            )
        if r.seq_len != first.seq_len:
            raise ShardError(
                f"{r.location} has seq_len {r.seq_len}, {first.location} has {first.seq_len}: "
                "sequences of one batch must have one length"
            )
    names = [r.name for r in readers]
    if len(set(names)) != len(names):
        raise ShardError(f"shard directories need distinct names, got {names}")
    return readers


def to_hf_dataset(dirs: str | os.PathLike | Sequence[str | os.PathLike], cache_dir: Path | None = None):
    """The same shards as one Hugging Face `datasets.Dataset`, memory-mapped, row for row.

    Row order: directories in the order given, then shard files, then rows.
    """
    import datasets

    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    readers = open_shard_dirs(dirs, cache_dir=cache_dir)
    parts = [datasets.Dataset.from_file(str(r.dir / f)) for r in readers for f in r.files]
    return datasets.concatenate_datasets(parts)
