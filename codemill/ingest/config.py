"""Settings of ingest: the sources, and how their files and records are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from codemill.config.loader import Section, invalid, setting

SourceType = Literal["dir", "jsonl", "parquet", "hf_disk"]

# Our column -> a record source's column (The Stack's names by default).
DEFAULT_COLUMNS = {
    "content": "content",
    "path": "path",
    "lang": "lang",
    "repo": "repo_name",
    "license": "license",
    "stars": "stars",
}


@dataclass
class SourceConfig(Section):
    """One input. `path` may use {stdlib}, {site_packages} (this interpreter's), ${VAR}."""

    name: str = setting(nonempty=True)
    type: SourceType = setting()
    path: str = setting(path=True, nonempty=True)
    # Record sources: our column -> the source's column (The Stack's names by default).
    columns: dict[str, str] = setting(dict)
    # Directory sources: metadata applied to every file, and extra excluded names.
    repo: str | None = None
    license: str | None = None
    exclude: list[str] = setting(list)

    def uri(self) -> str:
        """The source's location as a URI (a local path made absolute)."""
        from codemill.storage.uri import to_uri

        return to_uri(self.path)

    def check(self) -> None:
        for ours in self.columns:
            if ours not in DEFAULT_COLUMNS:
                raise invalid(("columns", ours), f"unknown column; known: {sorted(DEFAULT_COLUMNS)}")


@dataclass
class IngestConfig(Section):
    # The Stack drops files over 1 MB; larger files are almost never hand-written code.
    max_file_bytes: int = setting(1_000_000, ge=1)
    # "replace": decode with U+FFFD and flag the row; "drop": drop it with a reason.
    invalid_utf8: Literal["replace", "drop"] = "replace"
    # "error": stop, naming file and line; "quarantine": count the line and keep it aside.
    malformed_jsonl: Literal["error", "quarantine"] = "error"
    # Directory and file names (glob patterns) never walked into.
    exclude: list[str] = setting(
        lambda: [".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules"])
    files_per_partition: int = setting(400, ge=1)
    # Record files are read in tasks of about this many bytes: a plain JSONL file in
    # ranges aligned to lines, Parquet by row groups; smaller when the input is small,
    # so that every core gets a share. Each task costs about 0.1 s besides its reading
    # (220 MB of JSONL on 2 cores: 5.0 s in 8 MiB tasks, 2.5 s in 32 MiB, 1.9 s in 110 MiB).
    split_bytes: int = setting(128 << 20, ge=1, le=1 << 34)
    # Compression of the tables ingest writes itself (local `out`). They are read once, by
    # the next stage; compressing them costs more time than reading the inputs does.
    compression: Literal["none", "snappy", "zstd"] = "none"
