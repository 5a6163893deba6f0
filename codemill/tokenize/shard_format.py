"""The shard format (codemill.tokenize.shards writes it, codemill.train_hooks reads it):
the Arrow schema of a row, the manifest's name and format tag, reading the manifest
and verifying a shard directory. Only pyarrow: no Spark, no config, no tokenizer.

A sequence row: `input_ids` (seq_len int32), `doc_starts` (offsets of the documents'
BOS tokens in the row; a row whose offset 0 is not listed opens with the continuation
of a document) and `num_tokens` (real tokens; the rest is padding).

Instruction rows add one column, `loss_spans: list<int32>`: flattened `[start, end)`
pairs of token offsets in the row whose tokens are answer tokens (the only tokens the
instruction-tuning loss is taken on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from codemill.storage import StorageError, display, filesystem, join, to_uri
from codemill.storage.commit import resolve
from codemill.storage.local import file_sha256

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.model"
FORMAT = "codemill-shards/1"
LOSS_SPANS = "loss_spans"


class ShardError(ValueError):
    pass


class ShardMismatch(ShardError):
    """A shard directory's files differ from its manifest (checksums, sizes, rows)."""


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


def instruction_schema(seq_len: int) -> pa.Schema:
    """The shard schema plus `loss_spans` (answer-token spans, see the module docstring)."""
    base = sequence_schema(seq_len)
    item = pa.field("item", pa.int32(), nullable=False)
    return base.append(pa.field(LOSS_SPANS, pa.list_(item), nullable=False))


def read_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a shard directory: a local path or a URI (s3://, gs://, hdfs://,
    file://), read through its commit record when it is a pipeline output folder."""
    location = to_uri(shard_dir)
    fs = filesystem(location)
    uri = join(resolve(fs, location), MANIFEST)
    if not fs.exists(uri):
        raise ShardError(f"{display(uri)} does not exist: not a shard directory, or not finished")
    try:
        manifest = json.loads(fs.read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise ShardError(f"{display(uri)} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{display(uri)}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def verify_shards(shard_dir: str | os.PathLike, digests: dict[str, str] | None = None) -> list[str]:
    """Every problem found: checksums, sizes, row counts, schema, stray files. [] = sound.
    A remote directory is checked in its local cache (codemill.storage.cache).
    `digests`: sha256 of files hashed before, by path, size and modification time; it is
    read and extended, so a caller that keeps it does not hash unchanged files again."""
    from codemill.storage.cache import cached_shard_dir

    try:
        out = cached_shard_dir(shard_dir)
        manifest = read_manifest(out)
    except (ShardError, StorageError) as exc:
        return [str(exc)]
    def sha256_of(path: Path) -> str:
        if digests is None:
            return file_sha256(path)
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in digests:
            digests[key] = file_sha256(path)
        return digests[key]

    problems = []
    tok = manifest["tokenizer"]
    # the model and its Hugging Face files (hf_files: absent from older manifests)
    for name, sha256 in {tok["file"]: tok["sha256"], **tok.get("hf_files", {})}.items():
        path = out / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif sha256_of(path) != sha256:
            problems.append(f"{path}: sha256 differs from the manifest")
    schema = sequence_schema(manifest["seq_len"])
    listed = set()
    for s in manifest["shards"]:
        listed.add(s["file"])
        path = out / s["file"]
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != s["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {s['bytes']}")
        if sha256_of(path) != s["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
            continue
        try:
            rows, file_schema = count_rows(path)
        except (pa.ArrowInvalid, OSError) as exc:
            problems.append(f"{path}: unreadable: {exc}")
            continue
        if rows != s["rows"]:
            problems.append(f"{path}: {rows} rows, manifest says {s['rows']}")
        # extra columns may follow (instruction shards add `loss_spans`)
        if list(file_schema)[: len(schema)] != list(schema):
            problems.append(f"{path}: schema {file_schema} differs from {schema}")
    if sum(s["rows"] for s in manifest["shards"]) != manifest["counts"]["sequences"]:
        problems.append(f"{out / MANIFEST}: shard rows do not add up to counts.sequences")
    for path in sorted(out.iterdir()):
        if path.name.endswith(".arrow") and path.name not in listed or ".tmp-" in path.name:
            problems.append(f"{path}: not in the manifest (left by an interrupted writer?)")
    return problems


def fim_layout(shard_dir: str | os.PathLike) -> tuple[int, int]:
    """(FIM documents, those cut across a row boundary) in a local shard directory: a FIM
    document opens `<s> <PRE>`; it is whole when its row holds its `</s>`."""
    out = Path(shard_dir)
    manifest = read_manifest(out)
    ids = manifest["tokenizer"]["special_ids"]
    found = cut = 0
    for s in manifest["shards"]:
        with pa.memory_map(str(out / s["file"])) as source:
            table = pa.ipc.open_stream(source).read_all()
        for row, starts, n in zip(table.column("input_ids").to_numpy(zero_copy_only=False),
                                  table.column("doc_starts").to_pylist(),
                                  table.column("num_tokens").to_pylist()):
            for start, end in zip(starts, [*starts[1:], n]):
                if start + 1 < n and row[start + 1] == ids["pre"]:
                    found += 1
                    cut += int(row[end - 1] != ids["eos"])
    return found, cut


def count_rows(path: Path) -> tuple[int, pa.Schema]:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        return sum(b.num_rows for b in reader), reader.schema
