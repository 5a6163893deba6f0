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
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from codemill.arrow_batches import byte_slices
from codemill.errors import InputError
from codemill.ingest.languages import kind_of, lang_of_path, normalise_lang
from codemill.ingest.rows import ARROW_ROW_SCHEMA, BATCH_BYTES, BATCH_ROWS, decode, make_row, to_batch, to_batches
from codemill.ingest.splits import NEWLINE, Piece, is_compressed, numbered_blocks, numbered_lines, range_blocks
from codemill.schema import document_id
from codemill.storage import display, name
from codemill.storage.folder import Folder

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json")
OPEN_BRACE = ord("{")


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


class ContentFacts(NamedTuple):
    """What a row needs to know of a record's text."""

    size: int  # UTF-8 bytes
    sha256: str
    blank: bool  # empty or only whitespace


def record_row(
    record: dict[str, Any], columns: dict[str, str], source: str, where: str,
    invalid_utf8: bool = False, default_path: str | None = None,
) -> dict[str, Any]:
    """One record -> one row. `where` ("file:line") names the record in messages; a record
    without a path gets `default_path`, or else its content hash."""
    content = record.get(columns["content"])
    if content is None:
        return facts_row(record, columns, source, where, None, invalid_utf8, default_path)
    if not isinstance(content, str):
        raise InputError(
            f"{where}: column {columns['content']!r} holds {type(content).__name__}, not text"
        )
    utf8 = content.encode("utf-8")
    # `isspace` is `not content.strip()` without copying the text
    facts = ContentFacts(len(utf8), hashlib.sha256(utf8).hexdigest(), not content or content.isspace())
    row = facts_row(record, columns, source, where, facts, invalid_utf8, default_path)
    if row["reason"] is None:
        row["content"] = content
    return row


def facts_row(
    record: dict[str, Any], columns: dict[str, str], source: str, where: str,
    facts: ContentFacts | None, invalid_utf8: bool = False, default_path: str | None = None,
) -> dict[str, Any]:
    """A record's row from its other fields and what is known of its text (None: it has
    none); the content itself is left null for the caller to fill in when kept."""
    path = record.get(columns["path"])
    if path in (None, ""):
        path = default_path or ("sha256:" + facts.sha256 if facts else where)
    path = str(path)
    repo = record.get(columns["repo"])
    meta = dict(
        source=source,
        path=path,
        repo=str(repo) if repo is not None else None,
        license=_license_text(record.get(columns["license"])),
        stars=_stars(record.get(columns["stars"])),
        invalid_utf8=invalid_utf8,
        content=None,
    )
    lang = normalise_lang(record.get(columns["lang"])) or lang_of_path(path)
    if facts is None:
        return make_row(**meta, raw_size=0, lang=lang, reason="missing_content", detail=where)
    if facts.blank:
        return make_row(**meta, raw_size=facts.size, lang=lang, reason="empty", detail=where)
    if lang is None:
        return make_row(**meta, raw_size=facts.size, lang=None, reason="unknown_language", detail=where)
    return make_row(**meta, raw_size=facts.size, lang=lang, sha256=facts.sha256)


def _file_blocks(path: str, data: bytes | None) -> Iterator[tuple[int, memoryview]]:
    """`numbered_blocks` of a whole file, decompressed if it is gzip; a damaged gzip file
    is an InputError naming it and the last line read whole."""
    with open(path, "rb") if data is None else io.BytesIO(data) as raw:
        if not is_compressed(path):
            yield from numbered_blocks(raw, rewind=True)
            return
        first, block = 1, memoryview(b"")
        try:
            for first, block in numbered_blocks(gzip.GzipFile(fileobj=raw)):
                yield first, block
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            lineno = first - 1 + block.tobytes().count(b"\n")  # the last block read held whole lines
            raise InputError(f"{path}: truncated or damaged gzip file after line {lineno} ({exc}); "
                             "replace the file or remove it from the source") from None


def first_record_fields(path: str) -> list[str]:
    """The fields of the first record of a local JSONL file (for messages)."""
    for _, block in _file_blocks(path, None):
        for line in block.tobytes().split(b"\n"):
            if raw := line.strip():
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
    yield from jsonl_blocks_batches(_file_blocks(path, data), path, columns, source, invalid_utf8, malformed)


def read_jsonl_pieces(
    pieces: list[Piece], columns: dict[str, str], source: str, invalid_utf8: str, malformed: str,
) -> Iterator[pa.RecordBatch]:
    """The lines of planned pieces of local JSONL files (`codemill.ingest.splits`) -> rows,
    named and numbered as if the whole files were read."""
    for piece in pieces:
        blocks = _file_blocks(piece.path, None) if is_compressed(piece.path) else range_blocks(piece)
        yield from jsonl_blocks_batches(blocks, piece.path, columns, source, invalid_utf8, malformed)


def jsonl_blocks_batches(
    blocks: Iterator[tuple[int, memoryview]], path: str, columns: dict[str, str], source: str, invalid_utf8: str,
    malformed: str,
) -> Iterator[pa.RecordBatch]:
    """Numbered blocks of whole JSONL lines of the file `path` -> rows. A block whose
    every line is one record of plain fields is parsed by pyarrow and stays in Arrow;
    any other block goes line by line through `jsonl_rows`, which judges and names each
    line. Both give the same rows."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for first_line, block in blocks:
        records = plain_records(block, columns)
        if records is None:
            lines = numbered_lines(io.BytesIO(block), first_line)
            yield from to_batches(jsonl_rows(lines, path, columns, source, invalid_utf8, malformed))
            continue
        for batch in records.to_batches(max_chunksize=BATCH_ROWS):
            yield from records_batches(batch, first_line, path, name, columns, source)
            first_line += batch.num_rows


def plain_records(block: memoryview, columns: dict[str, str]) -> pa.Table | None:
    """The records of a block of JSONL lines read by pyarrow, one row per line, when every
    line is a JSON object and the mapped fields hold plain types (text content; see
    `_plain_type`); else None. pyarrow would read some lines the line-by-line reader
    judges otherwise (blank lines, two objects on one line, a \\r inside a line, invalid
    UTF-8, duplicate keys), so such blocks are refused before or after parsing."""
    data = np.frombuffer(block, np.uint8)
    if not len(data) or data[0] != OPEN_BRACE or len(data) >= 1 << 31:
        return None
    line_starts = np.flatnonzero(data == NEWLINE) + 1
    line_starts = line_starts[line_starts < len(data)]
    if not (data[line_starts] == OPEN_BRACE).all():
        return None
    lines = len(line_starts) + 1
    if data.max() >= 0x80:
        try:
            str(block, "utf-8")  # pyarrow's JSON reader does not check it
        except UnicodeDecodeError:
            return None
    text_fields = dict.fromkeys(columns[c] for c in ("content", "path", "lang", "repo"))
    options = pj.ParseOptions(explicit_schema=pa.schema([(f, pa.string()) for f in text_fields]),
                              unexpected_field_behavior="infer")  # no timestamps guessed from text
    try:
        table = pj.read_json(pa.py_buffer(block), parse_options=options,
                             read_options=pj.ReadOptions(use_threads=False, block_size=len(data)))
    except pa.ArrowInvalid:
        return None
    schema = table.schema
    if table.num_rows != lines or not all(_plain_type(ours, schema.field(theirs).type)
                                          for ours, theirs in columns.items() if theirs in schema.names):
        return None
    return table


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


_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.isspace accepts below 128
_UNTELLING = _ASCII_SPACE + bytes(range(128, 256))
_UNTELLING_BYTES = np.frombuffer(_UNTELLING, np.uint8)
_CONTENT = ARROW_ROW_SCHEMA.get_field_index("content")


def _blank(text: memoryview) -> bool:
    """`str.isspace` of UTF-8 text (True when empty), decoding it only when its first
    bytes hold no ASCII character that is not whitespace."""
    if not text.nbytes:
        return True
    if bytes(text[:64]).translate(None, _UNTELLING):
        return False
    return str(text, "utf-8", "replace").isspace()


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _plain_type(ours: str, t: pa.DataType) -> bool:
    """Whether a column's type gives, as they are, the values `facts_row` would make of
    it: text content; text (or null) for the other fields, whole-number stars, licenses
    as text or lists of text."""
    if ours == "content":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if ours == "stars" and pa.types.is_integer(t):
        return True
    if ours == "license" and pa.types.is_list(t) and _is_text(t.value_type):
        return True
    return _is_text(t)


def _plain_fields(batch: pa.RecordBatch, columns: dict[str, str]) -> dict[str, list[Any]] | None:
    """The records' other fields as Python lists (None for an absent column) when their
    types are plain (`_plain_type`); else None."""
    fields: dict[str, list[Any]] = {}
    n = batch.num_rows
    for ours in ("path", "lang", "repo", "license", "stars"):
        theirs = columns[ours]
        if theirs not in batch.schema.names:
            fields[ours] = [None] * n
            continue
        column = batch.column(theirs)
        if not _plain_type(ours, column.type):
            return None
        if pa.types.is_list(column.type):
            if pc.list_flatten(column).null_count:
                return None  # a null inside a list is written "None"
            fields[ours] = [v or None for v in pc.binary_join(column, ",").to_pylist()]
        else:
            fields[ours] = column.to_pylist()
    return fields


def _content_facts(content: pa.Array) -> list[ContentFacts | None]:
    """What rows need to know of each text of a string array, measured and hashed where it
    lies (None: a null text)."""
    bounds = np.frombuffer(content.buffers()[1], np.int32, len(content) + 1, content.offset * 4)
    buffer = content.buffers()[2] or b""
    data = memoryview(buffer)
    # A text that begins with an ASCII character other than whitespace is not blank:
    # most are told by their first byte, without a Python call each.
    starts = bounds[:-1]
    nonempty = bounds[1:] > starts
    not_blank = np.zeros(len(content), bool)
    not_blank[nonempty] = ~np.isin(np.frombuffer(buffer, np.uint8)[starts[nonempty]], _UNTELLING_BYTES)
    present = content.is_valid().to_pylist() if content.null_count else [True] * len(content)
    facts: list[ContentFacts | None] = []
    for here, start, end, told in zip(present, starts.tolist(), bounds[1:].tolist(), not_blank.tolist()):
        text = data[start:end]
        facts.append(ContentFacts(end - start, hashlib.sha256(text).hexdigest(), not told and _blank(text))
                     if here else None)
    return facts


def _plain_rows(fields: dict[str, list[Any]], facts: list[ContentFacts | None], first_row: int, where: str,
                default_name: str | None, source: str) -> pa.RecordBatch:
    """`facts_row` column by column, for fields `_plain_fields` made (content left null)."""
    out: dict[str, list[Any]] = {name: [] for name in ("id", "path", "lang", "kind", "kind_source", "size_bytes",
                                                        "sha256", "reason", "detail")}
    for i, (fact, path, lang, repo) in enumerate(zip(facts, fields["path"], fields["lang"], fields["repo"])):
        n = first_row + i
        sha, size = (fact.sha256, fact.size) if fact else (None, 0)
        if path in (None, ""):
            path = f"{default_name}:{n}" if default_name else ("sha256:" + sha if sha else f"{where}:{n}")
        lang = normalise_lang(lang) or lang_of_path(path)
        reason = ("missing_content" if fact is None else "empty" if fact.blank
                  else "unknown_language" if lang is None else None)
        if reason is not None:
            sha = None
            if reason == "unknown_language":
                lang = None
        out["id"].append(document_id(source, f"{repo}/{path}" if repo else path, sha or ""))
        out["path"].append(path)
        out["lang"].append(lang)
        out["kind"].append(kind_of(lang))
        out["kind_source"].append("extension" if lang is not None else None)
        out["size_bytes"].append(size)
        out["sha256"].append(sha)
        out["reason"].append(reason)
        out["detail"].append(f"{where}:{n}" if reason else None)
    n_rows = len(facts)
    values = {**out, "source": [source] * n_rows, "repo": fields["repo"], "license": fields["license"],
              "content": [None] * n_rows, "stars": fields["stars"], "invalid_utf8": [False] * n_rows}
    return pa.RecordBatch.from_arrays([pa.array(values[f.name], f.type) for f in ARROW_ROW_SCHEMA],
                                      schema=ARROW_ROW_SCHEMA)


def records_batches(batch: pa.RecordBatch, first_row: int, where: str, default_name: str | None,
                    columns: dict[str, str], source: str) -> Iterator[pa.RecordBatch]:
    """A batch of records -> batches of rows, named as `_batch_rows` names them. A text
    column stays in Arrow: it is hashed and measured where it lies and becomes the
    rows' content without passing through Python strings; other fields of plain types
    are read column by column."""
    content = batch.column(columns["content"]) if columns["content"] in batch.schema.names else None
    if content is None or not (pa.types.is_string(content.type) or pa.types.is_large_string(content.type)):
        yield from to_batches(_batch_rows(batch, first_row, where, default_name, columns, source))
        return
    content = content.cast(pa.string())
    facts = _content_facts(content)
    fields = _plain_fields(batch, columns)
    if fields is not None:
        out = _plain_rows(fields, facts, first_row, where, default_name, source)
    else:
        out = to_batch(list(_facts_rows(batch, facts, first_row, where, default_name, columns, source)))
    kept = pc.is_null(out.column("reason"))
    out = out.set_column(_CONTENT, "content", content if pc.all(kept).as_py() else _kept_texts(content, kept))
    yield from byte_slices(out, "content", BATCH_BYTES)


def _kept_texts(content: pa.StringArray, kept: pa.BooleanArray) -> pa.StringArray:
    """`content` with the texts of dropped rows null, sharing its offsets and bytes: a
    filter or `if_else` would copy every text of the batch."""
    valid = pc.and_(kept, content.is_valid())
    if content.offset:  # the validity bitmap is indexed from the array's offset
        valid = pa.concat_arrays([pa.array([False] * content.offset), valid])
    return pa.Array.from_buffers(pa.string(), len(content), [valid.buffers()[1], *content.buffers()[1:]],
                                 offset=content.offset)


def _facts_rows(batch: pa.RecordBatch, facts: list[ContentFacts | None], first_row: int, where: str,
                default_name: str | None, columns: dict[str, str], source: str) -> Iterator[dict[str, Any]]:
    """Rows of records whose texts are known by `facts` and whose other fields go through
    `facts_row` one record at a time."""
    others = record_columns(batch, {k: c for k, c in columns.items() if c != columns["content"]})
    for i, (record, fact) in enumerate(zip(others.to_pylist(), facts)):
        n = first_row + i
        yield facts_row(record, columns, source, f"{where}:{n}", fact,
                        default_path=f"{default_name}:{n}" if default_name else None)


def read_arrow_stream(
    path: str, label: str, columns: dict[str, str], source: str, data: bytes | None = None
) -> Iterator[pa.RecordBatch]:
    """A Hugging Face `datasets` cache file (Arrow IPC stream) -> rows; records are
    named `label:row` (a stable position inside one file). From the local file `path`,
    or from `data` read elsewhere."""

    def rows(stream: pa.ipc.RecordBatchStreamReader) -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in stream:
            yield from records_batches(batch, offset, label, label, columns, source)
            offset += batch.num_rows

    with pa.memory_map(path) if data is None else pa.BufferReader(data) as mm:
        yield from rows(pa.ipc.open_stream(mm))


def read_parquet_task(
    groups: list[tuple[str, int, int]], columns: dict[str, str], source: str
) -> Iterator[pa.RecordBatch]:
    """Row groups (file, index, first row) of local Parquet files -> rows, read with
    pyarrow; records are named `file:row`, and one without a path gets `name:row`."""
    open_path, file = None, None
    for path, group, first_row in groups:
        if path != open_path:
            open_path, file = path, pq.ParquetFile(path)
            wanted = [c for c in dict.fromkeys(columns.values()) if c in file.schema_arrow.names]
            name = path.rstrip("/").rsplit("/", 1)[-1]
        offset = first_row
        # one thread: a read task has one core, and the other tasks hold the rest
        for batch in file.read_row_group(group, columns=wanted, use_threads=False).to_batches(max_chunksize=BATCH_ROWS):
            yield from records_batches(batch, offset, path, name, columns, source)
            offset += batch.num_rows


def parquet_to_rows(
    batches: Iterator[pa.RecordBatch], columns: dict[str, str], source: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for Parquet records read by Spark: `_file` and `_row` (the file and
    the row's index in it) name them as `read_parquet_task` does."""

    for batch in batches:
        files, positions = batch.column("_file").to_pylist(), batch.column("_row").to_pylist()
        start = 0
        for i in range(1, len(files) + 1):  # runs of consecutive rows of one file
            if i == len(files) or files[i] != files[start] or positions[i] != positions[i - 1] + 1:
                file = files[start]
                yield from records_batches(batch.slice(start, i - start), positions[start], file,
                                           file.rstrip("/").rsplit("/", 1)[-1], columns, source)
                start = i


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
