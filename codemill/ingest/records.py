"""Record sources in The Stack's schema: JSONL, Parquet, and Hugging Face datasets on disk.

Each record becomes one row through `record_row`; a source's column names map
onto ours through `[sources.columns]`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from codemill.errors import InputError
from codemill.ingest.languages import lang_of_path, normalise_lang
from codemill.ingest.rows import BATCH_ROWS, decode, make_row, to_batches
from codemill.ingest.splits import Piece, is_compressed, numbered_lines, range_lines
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
    utf8 = content.encode("utf-8")
    size = len(utf8)
    if not content or content.isspace():  # as `not content.strip()`, without copying it
        return make_row(**meta, content=None, raw_size=size, lang=lang, reason="empty",
                        detail=where)
    if lang is None:
        return make_row(**meta, content=None, raw_size=size, lang=None,
                        reason="unknown_language", detail=where)
    return make_row(**meta, content=content, raw_size=size, lang=lang, utf8=utf8)


def _file_lines(path: str, data: bytes | None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a whole file, decompressed if it is gzip; a damaged
    gzip file is an InputError naming it and the last line read."""
    with open(path, "rb") if data is None else io.BytesIO(data) as raw:
        if not is_compressed(path):
            yield from numbered_lines(raw)
            return
        lineno = 0
        try:
            for lineno, line in numbered_lines(gzip.GzipFile(fileobj=raw)):
                yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"{path}: truncated or damaged gzip file after line {lineno} ({exc}); "
                             "replace the file or remove it from the source") from None


def first_record_fields(path: str) -> list[str]:
    """The fields of the first record of a local JSONL file (for messages)."""
    for _, raw in _file_lines(path, None):
        if raw.strip():
            try:
                return sorted(_parse_object(raw.decode("utf-8", "replace")))
            except ValueError:
                return []
    return []


def _parse_object(text: str) -> dict[str, Any]:
    """A JSON object from one line. orjson is much faster; what it refuses (NaN, huge
    integers, lone surrogates, and real errors) goes to json, whose result or message
    stands, so records and messages are what json alone gives."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    return record


def jsonl_rows(
    lines: Iterator[tuple[int, bytes | memoryview]], path: str, columns: dict[str, str], source: str,
    invalid_utf8: str, malformed: str,
) -> Iterator[dict[str, Any]]:
    """Numbered JSONL lines of the file `path` -> rows; records are named `file:line`."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for lineno, raw in lines:
        try:  # the common case first: valid UTF-8 holding an object orjson reads
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            record = None
        text, invalid = None, False
        if not isinstance(record, dict):
            raw = bytes(raw)
            if not raw.strip():
                continue
            text, invalid = decode(raw, invalid_utf8)
            if text is None:
                yield make_row(source=source, path=f"{name}:{lineno}", content=None, raw_size=len(raw),
                               lang=None, invalid_utf8=True, reason="invalid_utf8", detail=f"{path}:{lineno}")
                continue
        where = f"{path}:{lineno}"
        try:
            yield record_row(record if text is None else _parse_object(text), columns, source, where, invalid,
                             f"{name}:{lineno}")
        except (ValueError, InputError) as exc:
            message = f"{where}: malformed JSONL record: {exc}"
            if malformed == "error":
                raise InputError(
                    message + " (set ingest.malformed_jsonl = \"quarantine\" to set such lines aside)"
                ) from None
            if text is None:
                text, invalid = decode(bytes(raw), invalid_utf8)
            yield make_row(source=source, path=f"{name}:{lineno}", content=text, raw_size=len(raw),
                           lang=None, invalid_utf8=invalid, reason="malformed_jsonl", detail=message)


def read_jsonl(
    path: str, columns: dict[str, str], source: str, invalid_utf8: str, malformed: str,
    data: bytes | None = None,
) -> Iterator[pa.RecordBatch]:
    """A JSONL file -> rows: from the local file `path`, or from `data` read elsewhere
    (then `path` only names it)."""
    yield from to_batches(jsonl_rows(_file_lines(path, data), path, columns, source, invalid_utf8, malformed))


def read_jsonl_pieces(
    pieces: list[Piece], columns: dict[str, str], source: str, invalid_utf8: str, malformed: str,
) -> Iterator[pa.RecordBatch]:
    """The lines of planned pieces of local JSONL files (`codemill.ingest.splits`) -> rows,
    named and numbered as if the whole files were read."""
    for piece in pieces:
        lines = _file_lines(piece.path, None) if piece.start == 0 and piece.end is None else range_lines(piece)
        yield from to_batches(jsonl_rows(lines, piece.path, columns, source, invalid_utf8, malformed))


def record_columns(batch: pa.RecordBatch, columns: dict[str, str]) -> pa.RecordBatch:
    """Only the columns records are read from: the rest need no conversion to Python."""
    wanted = [c for c in dict.fromkeys(columns.values()) if c in batch.schema.names]
    return batch.select(wanted)


def _batch_rows(batch: pa.RecordBatch, first_row: int, where: str, default_name: str | None,
                columns: dict[str, str], source: str) -> Iterator[dict[str, Any]]:
    """Rows of one batch of records; record i is named `where:first_row+i`, and a record
    without a path gets `default_name:first_row+i`."""
    for i, record in enumerate(record_columns(batch, columns).to_pylist(), start=first_row):
        yield record_row(record, columns, source, f"{where}:{i}",
                         default_path=f"{default_name}:{i}" if default_name else None)


def read_arrow_stream(
    path: str, label: str, columns: dict[str, str], source: str, data: bytes | None = None
) -> Iterator[pa.RecordBatch]:
    """A Hugging Face `datasets` cache file (Arrow IPC stream) -> rows; records are
    named `label:row` (a stable position inside one file). From the local file `path`,
    or from `data` read elsewhere."""

    def rows(stream: pa.ipc.RecordBatchStreamReader) -> Iterator[dict[str, Any]]:
        offset = 0
        for batch in stream:
            yield from _batch_rows(batch, offset, label, label, columns, source)
            offset += batch.num_rows

    with pa.memory_map(path) if data is None else pa.BufferReader(data) as mm:
        yield from to_batches(rows(pa.ipc.open_stream(mm)))


def _parquet_task_rows(groups: list[tuple[str, int, int]], columns: dict[str, str],
                       source: str) -> Iterator[dict[str, Any]]:
    open_path, file = None, None
    for path, group, first_row in groups:
        if path != open_path:
            open_path, file = path, pq.ParquetFile(path)
            wanted = [c for c in dict.fromkeys(columns.values()) if c in file.schema_arrow.names]
            name = path.rstrip("/").rsplit("/", 1)[-1]
        offset = first_row
        for batch in file.read_row_group(group, columns=wanted).to_batches(max_chunksize=BATCH_ROWS):
            yield from _batch_rows(batch, offset, path, name, columns, source)
            offset += batch.num_rows


def read_parquet_task(
    groups: list[tuple[str, int, int]], columns: dict[str, str], source: str
) -> Iterator[pa.RecordBatch]:
    """Row groups (file, index, first row) of local Parquet files -> rows, read with
    pyarrow; records are named `file:row`, and one without a path gets `name:row`."""
    yield from to_batches(_parquet_task_rows(groups, columns, source))


def parquet_to_rows(
    batches: Iterator[pa.RecordBatch], columns: dict[str, str], source: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for Parquet records read by Spark: `_file` and `_row` (the file and
    the row's index in it) name them as `read_parquet_task` does."""

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            files, positions = batch.column("_file").to_pylist(), batch.column("_row").to_pylist()
            for file, row, record in zip(files, positions, record_columns(batch, columns).to_pylist()):
                name = file.rstrip("/").rsplit("/", 1)[-1]
                yield record_row(record, columns, source, f"{file}:{row}", default_path=f"{name}:{row}")

    yield from to_batches(rows())


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
