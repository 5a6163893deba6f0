"""Cutting Spark's Arrow batches by bytes: Spark sizes them by rows, and ten thousand
large files in one batch would not fit a Python worker's memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def byte_slices(batch: pa.RecordBatch, column: str, max_bytes: int = 16 << 20) -> Iterator[pa.RecordBatch]:
    """Consecutive slices of `batch` holding at most ~max_bytes of `column` (at least one row each)."""
    sizes = np.asarray(pc.fill_null(pc.binary_length(batch.column(column)), 0), dtype=np.int64)
    ends = np.cumsum(sizes)
    start = 0
    while start < batch.num_rows:
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + max_bytes, side="right")))
        yield batch.slice(start, stop - start)
        start = stop
