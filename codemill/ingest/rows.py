"""Building ingest output rows on executors: one schema for kept and dropped.

Executors emit every input as a row of ROW_SCHEMA; `reason` is null for kept
documents. The driver splits the result into the document and dropped tables.
"""

from __future__ import annotations

import hashlib
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
    raw_sha256: str | None = None,
) -> dict[str, Any]:
    """One output row; a row with content is hashed on its UTF-8 text."""
    sha = hashlib.sha256(content.encode("utf-8")).hexdigest() if content is not None else raw_sha256
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
    return pa.RecordBatch.from_pylist(rows, schema=ARROW_ROW_SCHEMA)
