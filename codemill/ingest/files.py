"""Reading listed files on executors: binary and size checks, decoding, language."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from codemill.ingest.languages import lang_of_path, refine_header_lang
from codemill.ingest.rows import decode, make_row, to_batch, to_batches
from codemill.ingest.walk import FileEntry

# Git's heuristic: a NUL byte in the first 8000 bytes means binary.
BINARY_PROBE_BYTES = 8000


def read_file(entry: dict[str, Any], max_file_bytes: int, invalid_utf8: str) -> dict[str, Any]:
    """One listed file -> one output row (kept, or dropped with a reason)."""
    meta = dict(source=entry["source"], path=entry["path"], repo=entry["repo"],
                license=entry["license"])
    if entry["reason"]:
        return make_row(**meta, content=None, raw_size=entry["size"], lang=None,
                        reason=entry["reason"])
    try:
        with open(Path(entry["root"], entry["path"]), "rb") as f:
            data = f.read(max_file_bytes + 1)
    except OSError as exc:
        return make_row(**meta, content=None, raw_size=entry["size"], lang=None,
                        reason="unreadable", detail=exc.strerror)
    return file_row(meta, data, max_file_bytes, invalid_utf8)


def file_row(meta: dict[str, Any], data: bytes, max_file_bytes: int, invalid_utf8: str) -> dict[str, Any]:
    """A file's bytes (up to max_file_bytes + 1 of them) -> its row."""
    path = meta["path"]
    raw_sha = hashlib.sha256(data).hexdigest()
    lang = lang_of_path(path, data[:256])
    if len(data) > max_file_bytes:  # grew since it was listed
        return make_row(**meta, content=None, raw_size=len(data), lang=lang, reason="too_large",
                        sha256=raw_sha)
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return make_row(**meta, content=None, raw_size=len(data), lang=lang, reason="binary",
                        sha256=raw_sha)
    if not data.strip():
        return make_row(**meta, content=None, raw_size=len(data), lang=lang, reason="empty",
                        sha256=raw_sha)
    if lang is None:
        return make_row(**meta, content=None, raw_size=len(data), lang=None,
                        reason="unknown_language", sha256=raw_sha)
    text, invalid = decode(data, invalid_utf8)
    if text is None:
        return make_row(**meta, content=None, raw_size=len(data), lang=lang,
                        invalid_utf8=True, reason="invalid_utf8", sha256=raw_sha)
    lang = refine_header_lang(lang, path, text)
    return make_row(**meta, content=text, raw_size=len(data), lang=lang, invalid_utf8=invalid)


def read_files(
    batches: Iterator[pa.RecordBatch], max_file_bytes: int, invalid_utf8: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: listed-file batches in, document rows out."""
    for batch in batches:
        rows = [read_file(e, max_file_bytes, invalid_utf8) for e in batch.to_pylist()]
        if rows:
            yield to_batch(rows)


def read_entries(entries: list[FileEntry], max_file_bytes: int, invalid_utf8: str) -> Iterator[pa.RecordBatch]:
    """Listed local files -> document rows."""
    yield from to_batches(read_file(vars(e), max_file_bytes, invalid_utf8) for e in entries)
