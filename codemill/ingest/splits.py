"""Planning the read of local record files: byte ranges aligned to lines, packed into tasks.

A plain JSONL file larger than the split size is cut into byte ranges, so one big
file keeps every core busy. A range owns the lines that *begin* inside it (Hadoop's
line-split rule): its reader skips the partial line it starts in and reads on past
its end to finish its last line, so every line is read exactly once. Line numbers
stay true: a range is told how many newlines lie before it, counted by a first pass
(`count_newlines`, run on executors). Compressed files cannot be cut; each is one
piece. Pieces are packed into tasks of about one split each, so many small files
do not become many tiny tasks.
"""

from __future__ import annotations

import io
import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import numpy as np
import pyarrow.parquet as pq

T = TypeVar("T")

# Below this, a task's fixed cost outweighs what splitting gains.
MIN_SPLIT_BYTES = 1 << 20
_COUNT_CHUNK = 1 << 20
_READ_BLOCK = 8 << 20
NEWLINE = ord("\n")


@dataclass(frozen=True)
class Piece:
    """Part of one file for one task: the lines beginning in [start, end)."""

    path: str
    start: int = 0
    end: int | None = None  # None: to the end of the file
    newlines_before: int = 0  # b"\n" bytes in [0, start)


def is_compressed(path: str) -> bool:
    return path.endswith(".gz")


def split_size(total_bytes: int, split_bytes: int, cores: int) -> int:
    """At most `split_bytes`, and small enough that every core gets a share (as Spark
    sizes its file splits), but not below MIN_SPLIT_BYTES unless `split_bytes` is."""
    per_core = math.ceil(total_bytes / max(1, cores))
    return max(1, min(split_bytes, max(MIN_SPLIT_BYTES, per_core)))


def file_pieces(path: str, size: int, split: int) -> list[Piece]:
    """One piece for a small or compressed file; ranges of `split` bytes otherwise
    (the last one open-ended). `newlines_before` is filled in later."""
    if is_compressed(path) or size <= split:
        return [Piece(path)]
    starts = range(0, size, split)
    return [Piece(path, start, start + split if start + split < size else None) for start in starts]


def pack(sized: list[tuple[T, int]], split: int) -> list[list[T]]:
    """Consecutive (item, bytes) pairs grouped into tasks of about `split` bytes each."""
    tasks: list[list[T]] = []
    current: list[T] = []
    current_bytes = 0
    for item, size in sized:
        if current and current_bytes + size > split:
            tasks.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        tasks.append(current)
    return tasks


def plan_jsonl(files: list[tuple[str, int]], split: int) -> list[list[Piece]]:
    """(path, size) of local JSONL files -> tasks of pieces (`newlines_before` still 0)."""
    sizes = dict(files)
    pieces = [piece for path, size in files for piece in file_pieces(path, size, split)]
    return pack([(p, (sizes[p.path] if p.end is None else p.end) - p.start) for p in pieces], split)


def parquet_row_groups(meta: pq.FileMetaData) -> list[tuple[int, int, int]]:
    """(index, first row, uncompressed bytes) of each row group of a Parquet file."""
    groups, first = [], 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        groups.append((i, first, group.total_byte_size))
        first += group.num_rows
    return groups


def count_newlines(path: str, start: int, end: int) -> int:
    """Newline bytes in [start, end) of a file, counted where the file is mapped, in
    chunks that stay in the CPU cache."""
    if end <= start:
        return 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = np.frombuffer(mapped, np.uint8)[start:end]
        count = sum(int(np.count_nonzero(data[i:i + _COUNT_CHUNK] == NEWLINE))
                    for i in range(0, len(data), _COUNT_CHUNK))
        del data  # the map cannot close while a view holds it
    return count


def with_line_offsets(pieces: list[Piece], counts: dict[tuple[str, int], int]) -> list[Piece]:
    """Pieces with `newlines_before` set from the newline count of every range
    before them in their file (`counts` maps (path, start) to its range's count)."""
    out, seen = [], {}
    for piece in pieces:
        before = seen.get(piece.path, 0)
        out.append(Piece(piece.path, piece.start, piece.end, before))
        if piece.end is not None:
            seen[piece.path] = before + counts[(piece.path, piece.start)]
    return out


def numbered_lines(f: BinaryIO, lineno: int = 1, pos: int = 0, end: int | None = None
                   ) -> Iterator[tuple[int, memoryview]]:
    """(line number, raw line with its b"\\n") of a binary stream from `pos` on, until a
    line begins at or after `end`. Read in large blocks and handed out as views into
    them: several times faster than iterating the stream line by line."""
    tail = b""
    while True:
        block = f.read(_READ_BLOCK)
        if not block:
            if tail and (end is None or pos < end):
                yield lineno, memoryview(tail)
            return
        if tail:
            block = tail + block
        view, start = memoryview(block), 0
        while (stop := block.find(b"\n", start)) >= 0:
            if end is not None and pos >= end:
                return
            yield lineno, view[start:stop + 1]
            pos += stop + 1 - start
            lineno += 1
            start = stop + 1
        tail = block[start:]


def numbered_blocks(f: BinaryIO, size: int = _READ_BLOCK, rewind: bool = False
                    ) -> Iterator[tuple[int, memoryview]]:
    """(number of the first line, whole lines) of a binary stream, in blocks of about
    `size` bytes (more when a line is longer). Every block but the stream's last ends
    with b"\\n". With `rewind` (a stream that seeks cheaply, unlike gzip), the line a
    read cuts is read again by the next read instead of being copied in front of it."""
    lineno, tail = 1, b""
    while True:
        block = f.read(size)
        if not block:
            if tail:
                yield lineno, memoryview(tail)
            return
        if tail:
            block = tail + block
        cut = block.rfind(b"\n") + 1
        if cut:
            yield lineno, memoryview(block)[:cut]
            lineno += int(np.count_nonzero(np.frombuffer(block, np.uint8, cut) == NEWLINE))
        if rewind and cut:
            f.seek(cut - len(block), io.SEEK_CUR)
            tail = b""
        else:
            tail = block[cut:]


def range_blocks(piece: Piece, size: int = _READ_BLOCK) -> Iterator[tuple[int, memoryview]]:
    """`numbered_blocks` of the lines that begin in the piece's range of a plain file,
    read where the kernel maps it: blocks are views of the page cache, never copies."""
    with open(piece.path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        if length == 0:
            return
        # the map outlives the file; it closes when the last view of it is gone
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    view = memoryview(mapped)
    end = length if piece.end is None else min(piece.end, length)
    lineno, pos = piece.newlines_before + 1, piece.start
    if pos > 0:
        pos = mapped.find(b"\n", pos - 1) + 1 or length  # the line cut by the range's start
        lineno += pos != piece.start
    while pos < end:
        if end - pos <= size:  # the last block: up to the end of the line holding byte end - 1
            yield lineno, view[pos:mapped.find(b"\n", end - 1) + 1 or length]
            return
        cut = mapped.rfind(b"\n", pos, pos + size) + 1
        if not cut:  # a line longer than a block
            cut = mapped.find(b"\n", pos + size) + 1 or length
        block = view[pos:cut]
        yield lineno, block
        lineno += int(np.count_nonzero(np.frombuffer(block, np.uint8) == NEWLINE))
        pos = cut
