"""Record sources in The Stack's schema: JSONL, Parquet, and Hugging Face datasets on disk.

Each record becomes one row through `record_row`; a source's column names map
onto ours through `[sources.columns]`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from codemill.errors import InputError
from codemill.ingest.languages import lang_of_path, normalise_lang
from codemill.ingest.rows import decode, make_row, to_batch
from codemill.storage import display, name
from codemill.storage.folder import Folder

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json")


def _license_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or None
    return str(value)


def _stars(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def record_row(
    record: dict[str, Any], columns: dict[str, str], source: str, where: str,
    invalid_utf8: bool = False, default_path: str | None = None,
) -> dict[str, Any]:
    """One record -> one row. `where` ("file:line") names the record in messages; a record
    without a path gets `default_path`, or else its content hash."""
    content = record.get(columns["content"])
    path = record.get(columns["path"])
    if path in (None, ""):
        path = default_path or (
            "sha256:" + hashlib.sha256(content.encode()).hexdigest()
            if isinstance(content, str) else where
        )
    path = str(path)
    repo = record.get(columns["repo"])
    meta = dict(
        source=source,
        path=path,
        repo=str(repo) if repo is not None else None,
        license=_license_text(record.get(columns["license"])),
        stars=_stars(record.get(columns["stars"])),
        invalid_utf8=invalid_utf8,
    )
    lang = normalise_lang(record.get(columns["lang"])) or lang_of_path(path)
    if content is None:
        return make_row(**meta, content=None, raw_size=0, lang=lang, reason="missing_content",
                        detail=where)
    if not isinstance(content, str):
        raise InputError(
            f"{where}: column {columns['content']!r} holds {type(content).__name__}, not text"
        )
    size = len(content.encode("utf-8"))
    if not content.strip():
        return make_row(**meta, content=None, raw_size=size, lang=lang, reason="empty",
                        detail=where)
    if lang is None:
        return make_row(**meta, content=None, raw_size=size, lang=None,
                        reason="unknown_language", detail=where)
    return make_row(**meta, content=content, raw_size=size, lang=lang)


def _jsonl_lines(path: str, data: bytes | None) -> Iterator[bytes]:
    with open(path, "rb") if data is None else io.BytesIO(data) as raw:
        yield from gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def read_jsonl(
    path: str, columns: dict[str, str], source: str, invalid_utf8: str, malformed: str,
    batch_rows: int = 2048, data: bytes | None = None,
) -> Iterator[pa.RecordBatch]:
    """A JSONL file -> rows: from the local file `path`, or from `data` read elsewhere
    (then `path` only names it)."""
    rows: list[dict[str, Any]] = []
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for lineno, raw in enumerate(_jsonl_lines(path, data), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        text, invalid = decode(raw, invalid_utf8)
        if text is None:
            rows.append(make_row(source=source, path=f"{name}:{lineno}", content=None,
                                 raw_size=len(raw), lang=None, invalid_utf8=True,
                                 reason="invalid_utf8", detail=where))
            continue
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            rows.append(record_row(record, columns, source, where, invalid, f"{name}:{lineno}"))
        except (ValueError, InputError) as exc:
            message = f"{where}: malformed JSONL record: {exc}"
            if malformed == "error":
                raise InputError(
                    message + " (set ingest.malformed_jsonl = \"quarantine\" to set such lines aside)"
                ) from None
            rows.append(make_row(source=source, path=f"{name}:{lineno}", content=text,
                                 raw_size=len(raw), lang=None, invalid_utf8=invalid,
                                 reason="malformed_jsonl", detail=message))
        if len(rows) >= batch_rows:
            yield to_batch(rows)
            rows = []
    if rows:
        yield to_batch(rows)


def read_arrow_stream(
    path: str, label: str, columns: dict[str, str], source: str, data: bytes | None = None
) -> Iterator[pa.RecordBatch]:
    """A Hugging Face `datasets` cache file (Arrow IPC stream) -> rows; records are
    named `label:row` (a stable position inside one file). From the local file `path`,
    or from `data` read elsewhere."""
    with pa.memory_map(path) if data is None else pa.BufferReader(data) as mm:
        offset = 0
        for batch in pa.ipc.open_stream(mm):
            rows = [
                record_row(r, columns, source, f"{label}:{offset + i}",
                           default_path=f"{label}:{offset + i}")
                for i, r in enumerate(batch.to_pylist())
            ]
            offset += batch.num_rows
            if rows:
                yield to_batch(rows)


def parquet_to_rows(
    batches: Iterator[pa.RecordBatch], columns: dict[str, str], source: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for Parquet records; `_file` (input_file_name) names them in messages."""
    for batch in batches:
        rows = [record_row(r, columns, source, r["_file"]) for r in batch.to_pylist()]
        if rows:
            yield to_batch(rows)


def list_jsonl_files(root: Folder) -> list[str]:
    """The JSONL files of a source: the file itself, or those under the folder."""
    files = root.fs.list_files(root.uri)
    if len(files) == 1 and files[0].uri.rstrip("/").endswith(name(root.uri)) and not root.fs.is_dir(root.uri):
        return [root.uri]
    return [f.uri for f in files if name(f.uri).endswith(JSONL_SUFFIXES)]


def list_hf_arrow_files(root: Folder) -> list[tuple[str, str]]:
    """Arrow files of a `Dataset.save_to_disk` or `DatasetDict.save_to_disk` directory,
    with a label (split/file) for messages and default paths."""
    if root.exists("dataset_dict.json"):
        splits = json.loads(root.read_text("dataset_dict.json"))["splits"]
        return [f for split in splits for f in list_hf_arrow_files(root.sub(split))]
    if not root.exists("state.json"):
        raise InputError(
            f"{display(root.uri)}: not a dataset saved with `save_to_disk` (no state.json or dataset_dict.json)"
        )
    files = json.loads(root.read_text("state.json"))["_data_files"]
    return [(root.join(f["filename"]), f"{name(root.uri)}/{f['filename']}") for f in files]
