"""Training shards on disk (docs/architecture.md, data contracts): Arrow IPC stream files plus a manifest.

A shard directory holds `shard-00000.arrow`, … (uncompressed IPC *stream* format,
the format of Hugging Face `datasets` cache files, so `Dataset.from_file` opens
one zero-copy), `manifest.json`, and a copy of the tokenizer model with its Hugging
Face files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`), so
that the directory alone can be decoded, verified and trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from codemill.storage import join, to_uri
from codemill.storage.folder import Folder
from codemill.storage.local import LocalFileSystem
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.fim import render
from codemill.tokenize.hf_tokenizer import write_hf_tokenizer
from codemill.tokenize.pack import PackStats

# the format (schemas, manifest reading, verification) is shard_format's; importers of
# read_manifest and verify_shards find them here too
from codemill.tokenize.shard_format import (  # noqa: F401
    FORMAT,
    MANIFEST,
    TOKENIZER_FILE,
    ShardError,
    fim_layout,
    instruction_schema,
    read_manifest,
    sequence_schema,
    verify_shards,
)
from codemill.tokenize.tokenizer import Tokenizer, TokenizerError, load_tokenizer

# Record batches of ~16 MiB: large enough that per-batch overhead vanishes, small
# enough that a loader touching one sequence maps little.
BATCH_BYTES = 16 << 20


@dataclass(frozen=True)
class ShardInfo:
    file: str  # name inside the shard directory
    rows: int
    bytes: int
    sha256: str


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.arrow"


def local_opener(out_dir: str | os.PathLike) -> Callable[[str], BinaryIO]:
    """Shard files in a local folder, each written under a temporary name and renamed
    when complete, so a killed writer never leaves a file that looks finished."""
    fs, folder = LocalFileSystem(), to_uri(out_dir)
    return lambda name: fs.open_output(join(folder, name))


class ShardWriter:
    """Writes packed rows into shards of `batches_per_shard` record batches each.

    `open_file(name)` gives the file a shard is written to: by default one in `out_dir`;
    Spark partitions stream theirs to the driver instead (tokenize/jobs.py), each under
    its own `prefix`, and the driver numbers the shards globally.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None,
        seq_len: int,
        prefix: str = "shard",
        rows_per_batch: int | None = None,
        batches_per_shard: int = 16,
        loss_spans: bool = False,
        open_file: Callable[[str], BinaryIO] | None = None,
    ) -> None:
        self.open_file = open_file or local_opener(out_dir)
        # instruction rows (loss_spans) add a column
        self.schema = instruction_schema(seq_len) if loss_spans else sequence_schema(seq_len)
        self.prefix = prefix
        self.rows_per_batch = rows_per_batch or max(1, BATCH_BYTES // (4 * seq_len))
        self.batches_per_shard = batches_per_shard
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._open: _OpenShard | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self.schema):
            raise ShardError(f"batch schema {batch.schema} is not the shard schema {self.schema}")
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows < self.rows_per_batch:
            return
        table = pa.Table.from_batches(self._pending, self.schema).combine_chunks()
        full = table.num_rows // self.rows_per_batch * self.rows_per_batch
        for offset in range(0, full, self.rows_per_batch):
            self._write_batch(table.slice(offset, self.rows_per_batch))
        rest = table.slice(full)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def close(self) -> list[ShardInfo]:
        """Write what is pending, finish the last shard; returns all shards written."""
        if self._pending_rows:
            self._write_batch(pa.Table.from_batches(self._pending, self.schema).combine_chunks())
            self._pending, self._pending_rows = [], 0
        if self._open is not None:
            self.shards.append(self._open.finish())
            self._open = None
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        if self._open is not None:
            self._open.discard()
            self._open = None
        self._pending, self._pending_rows = [], 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _write_batch(self, table: pa.Table) -> None:
        if self._open is None:
            name = shard_name(self.prefix, len(self.shards))
            self._open = _OpenShard(name, self.open_file(name), self.schema)
        self._open.write(table)
        if self._open.batches == self.batches_per_shard:
            self.shards.append(self._open.finish())
            self._open = None


class _HashingFile:
    """A write-only file that hashes and counts what passes through (one pass, no read-back)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.closed = True  # the shard decides: commit (close the target) or discard


class _OpenShard:
    def __init__(self, name: str, target: BinaryIO, schema: pa.Schema) -> None:
        self.name = name
        self._target = target
        self._file = _HashingFile(target)
        self._sink = pa.PythonFile(self._file, mode="w")
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self.rows = self.batches = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows
        self.batches += 1

    def finish(self) -> ShardInfo:
        self._writer.close()
        self._sink.close()
        self._target.close()
        return ShardInfo(self.name, self.rows, self._file.size, self._file.sha256.hexdigest())

    def discard(self) -> None:
        self._writer.close()
        self._sink.close()
        self._target.discard()


def write_manifest(
    out_dir: str | os.PathLike | Folder,
    *,
    tokenizer: Tokenizer,
    pack: PackConfig,
    fim: FimConfig,
    seed: int,
    shards: Sequence[ShardInfo],
    stats: PackStats,
    mix: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the tokenizer next to the shards with its Hugging Face files
    (codemill.tokenize.hf_tokenizer) and write manifest.json atomically.

    `mix` is recorded as given (e.g. requested and realised token shares per source,
    and each source's epochs). Raises if the shards and the counts disagree.
    """
    out = out_dir if isinstance(out_dir, Folder) else Folder(out_dir)
    rows = sum(s.rows for s in shards)
    if rows != stats.sequences:
        raise ShardError(f"{out}: the shards hold {rows} sequences, the stats {stats.sequences}")
    out.fs.upload(Path(tokenizer.path), out.join(TOKENIZER_FILE))
    hf_files = write_hf_tokenizer(out, tokenizer)
    manifest = {
        "format": FORMAT,
        "seq_len": pack.seq_len,
        "tokenizer": {
            "file": TOKENIZER_FILE,
            "source": tokenizer.name,
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.vocab_size,
            "special_ids": tokenizer.special_ids,
            "pad_id": tokenizer.eos_id,
            "dummy_prefix": tokenizer.dummy_prefix,
            "hf_files": hf_files,  # sha256 by name
        },
        "fim": {**asdict(fim), "seed": seed},
        "packing": asdict(pack),
        "mix": dict(mix or {}),
        "counts": stats.to_dict(),
        "shards": [asdict(s) for s in shards],
    }
    out.write_text(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def inspect_shards(shard_dir: str | os.PathLike, sample: int = 0) -> str:
    """A report for people: the manifest, checksum verification, one decoded sequence.
    A remote directory (s3://, gs://, hdfs://) is downloaded into the shard cache first."""
    from codemill.storage import display, to_uri
    from codemill.storage.cache import cached_shard_dir

    out = cached_shard_dir(shard_dir)
    m = read_manifest(out)
    tok, fim, counts = m["tokenizer"], m["fim"], m["counts"]
    given = display(to_uri(shard_dir))
    lines = [
        f"shards: {given}" + (f" (files in {out})" if str(out) != given else ""),
        f"  seq_len {m['seq_len']}, {counts['sequences']:,} sequences, {counts['tokens']:,} tokens "
        f"(+{counts['pad_tokens']:,} padding), {len(m['shards'])} shard files, "
        f"{sum(s['bytes'] for s in m['shards']) / 2**20:,.1f} MiB",
        f"  tokenizer {tok['source']} (sha256 {tok['sha256'][:16]}…), vocab {tok['vocab_size']}, "
        + ", ".join(f"{k}={v}" for k, v in tok["special_ids"].items()),
        f"  FIM rate {fim['rate']}, SPM share {fim['spm_rate']}, seed {fim['seed']}: "
        f"{counts['docs_psm']:,} PSM + {counts['docs_spm']:,} SPM of {counts['docs_packed']:,} docs; "
        f"{counts['docs_long']:,} longer than a context, {counts.get('docs_cut', 0):,} cut across "
        f"rows, {counts['docs_empty']:,} empty skipped",
    ]
    fim_docs, fim_cut = fim_layout(out)
    lines.append(f"  layout: {fim_docs:,} FIM documents in the rows, {fim_cut:,} of them cut across a "
                 f"row boundary; {counts['pad_tokens'] / max(counts['sequences'] * m['seq_len'], 1):.2%} "
                 "padding")
    lines += _mix_lines(m["mix"])
    problems = verify_shards(out)
    lines.append("checksums: OK" if not problems else f"checksums: {len(problems)} problem(s)")
    lines += [f"  {p}" for p in problems]
    lines += _sample_lines(out, m, sample)
    return "\n".join(lines)


def _mix_lines(mix: Mapping[str, Any]) -> list[str]:
    requested, realised = mix.get("requested", {}), mix.get("realised", {})
    if not requested and not realised:
        return []
    lines = ["  mix (token share)      requested  realised"]
    for source in sorted(set(requested) | set(realised)):
        req, real = (_percent(shares.get(source)) for shares in (requested, realised))
        lines.append(f"    {source:<20} {req:>9}  {real:>8}")
    return lines


def _percent(share: float | None) -> str:
    return "" if share is None else f"{share:.1%}"


def _sample_lines(out: Path, m: Mapping[str, Any], sample: int) -> list[str]:
    total = m["counts"]["sequences"]
    if not 0 <= sample < total:
        return [f"sample: no sequence {sample} (there are {total})"]
    row = sample
    for s in m["shards"]:
        if row < s["rows"]:
            break
        row -= s["rows"]
    with pa.memory_map(str(out / s["file"])) as source:
        table = pa.ipc.open_stream(source).read_all()
        record = table.slice(row, 1).to_pylist()[0]
    header = (
        f"sample sequence {sample} ({s['file']} row {row}): {record['num_tokens']} tokens, "
        f"documents start at {record['doc_starts']}"
    )
    try:
        tok = load_tokenizer(out / m["tokenizer"]["file"])
        text = render(record["input_ids"][: record["num_tokens"]], tok)
    except TokenizerError as exc:
        return [header, f"  cannot decode: {exc}"]
    return [header, "-" * 72, text, "-" * 72]
