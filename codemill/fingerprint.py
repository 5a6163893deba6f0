"""Fingerprints: short hashes of everything that changes an output, which name the
output's folder so that a changed setting never reuses stale output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def fingerprint(*parts: Any) -> str:
    """Short hash of `parts` (dataclasses, JSON values, or anything with a stable str)."""
    blob = json.dumps(
        [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def is_fingerprint(name: str) -> bool:
    """Whether `name` looks like what `fingerprint` returns (an output folder's name)."""
    return len(name) == 12 and all(c in "0123456789abcdef" for c in name)
