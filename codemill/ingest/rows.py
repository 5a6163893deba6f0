"""Building ingest output rows on executors: one schema for kept and dropped.

Executors emit every input as a row of ROW_SCHEMA; `reason` is null for kept
documents. The driver splits the result into the document and dropped tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql.types import StringType, StructField, StructType

from codemill.ingest.languages import kind_of
from codemill.schema import DOC_SCHEMA, document_id

ROW_SCHEMA = StructType(
    DOC_SCHEMA.fields
    + [
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)

# Rows per Arrow batch sent to the JVM, and the content bytes that close a batch sooner.
BATCH_ROWS = 2048
BATCH_BYTES = 4 << 20

ARROW_ROW_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.int64() if f.name in ("size_bytes", "stars") else
                 pa.bool_() if f.name == "invalid_utf8" else pa.string())
        for f in ROW_SCHEMA.fields
    ]
)


def decode(data: bytes, invalid_utf8: str) -> tuple[str | None, bool]:
    """(text, had_invalid_bytes); text is None when the policy drops invalid UTF-8."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        if invalid_utf8 == "drop":
            return None, True
        return data.decode("utf-8", errors="replace"), True


def make_row(
    *,
    source: str,
    path: str,
    content: str | None,
    raw_size: int,
    lang: str | None,
    repo: str | None = None,
    license: str | None = None,
    stars: int | None = None,
    invalid_utf8: bool = False,
    reason: str | None = None,
    detail: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """One output row. `sha256`: the content's hash when known already (for a row without
    content, that of the raw bytes); else a row with content is hashed on its UTF-8 text."""
    sha = sha256
    if sha is None and content is not None:
        sha = hashlib.sha256(content.encode("utf-8")).hexdigest()
    id_key = f"{repo}/{path}" if repo else path
    return {
        "id": document_id(source, id_key, sha or ""),
        "source": source,
        "repo": repo,
        "path": path,
        "lang": lang,
        "kind": kind_of(lang),
        "kind_source": "extension" if lang is not None else None,
        "license": license,
        "content": content,
        "size_bytes": raw_size,
        "sha256": sha,
        "stars": stars,
        "invalid_utf8": invalid_utf8,
        "reason": reason,
        "detail": detail,
    }


def to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    # column by column: several times faster than RecordBatch.from_pylist
    return pa.RecordBatch.from_arrays([pa.array([row[f.name] for row in rows], f.type) for f in ARROW_ROW_SCHEMA],
                                      schema=ARROW_ROW_SCHEMA)


def to_batches(rows: Iterable[dict[str, Any]], max_rows: int = BATCH_ROWS,
               max_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """Rows grouped into Arrow batches of at most `max_rows` rows or about `max_bytes`
    bytes of content, whichever comes first: a batch of large documents stays small
    in the Python worker and in the JVM that receives it."""
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        batch.append(row)
        if row["content"] is not None:
            size += row["size_bytes"]
        if len(batch) >= max_rows or size >= max_bytes:
            yield to_batch(batch)
            batch, size = [], 0
    if batch:
        yield to_batch(batch)
