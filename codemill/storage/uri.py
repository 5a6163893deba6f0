"""Locations as URIs: a local path becomes `file:///abs/path`; `hdfs://`, `s3a://`,
`gs://`, `abfs://`, `viewfs://` and any other scheme pass through unchanged."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def has_scheme(location: str | os.PathLike) -> bool:
    return bool(_SCHEME.match(str(location)))


def to_uri(location: str | os.PathLike) -> str:
    """A URI for `location`: relative and bare local paths are made absolute."""
    text = str(location)
    if has_scheme(text):
        stripped = text.rstrip("/")
        return stripped if not stripped.endswith(":") else text
    return "file://" + str(Path(text).expanduser().resolve())


def scheme(uri: str) -> str:
    """`file` for a bare path. Paths stay unescaped, as Hadoop's Path shows them."""
    text = str(uri)
    return text.split("://", 1)[0].lower() if has_scheme(text) else "file"


def is_local(uri: str | os.PathLike) -> bool:
    return scheme(str(uri)) == "file"


def local_path(uri: str | os.PathLike) -> Path:
    """The path of a local location (a bare path or a `file://` URI)."""
    text = str(uri)
    if not has_scheme(text):
        return Path(text).expanduser().resolve()
    if not is_local(text):
        raise ValueError(f"{text} is not a local path")
    rest = text.split("://", 1)[1]
    return Path("/" + rest.split("/", 1)[1] if not rest.startswith("/") else rest)


def join(uri: str | os.PathLike, *parts: str) -> str:
    """`uri/part/part…`; parts are '/'-separated names, never absolute."""
    base = str(uri).rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            base = f"{base}/{part}"
    return base


def name(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[0]


def display(uri: str) -> str:
    """How a location is shown to people: local ones as plain paths."""
    return str(local_path(uri)) if is_local(uri) else str(uri)
