"""Driver-side listing of directory sources.

Listing is cheap metadata work (names and sizes); reading, decoding and
hashing happen on executors. Files that can be judged by their metadata alone
(an extension we do not ingest, too large, a symlink loop) get their drop
reason here and are never read.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from codemill.ingest.languages import has_extension, lang_from_name


@dataclass(frozen=True)
class FileEntry:
    source: str
    repo: str | None
    license: str | None
    root: str
    path: str  # relative to root, '/'-separated
    size: int
    mtime_ns: int
    reason: str | None  # set when the file is dropped without being read


def is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (Python holds them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_name(name: str) -> str:
    """A file name's bytes as text, undecodable ones written `\\xNN`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _excluded(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def walk_source(
    name: str,
    root: Path,
    repo: str | None,
    license: str | None,
    exclude: list[str],
    max_file_bytes: int,
) -> list[FileEntry]:
    """Every file under `root`, in sorted order, following directory symlinks once."""
    entries: list[FileEntry] = []

    def add(rel: str, size: int = 0, mtime_ns: int = 0, reason: str | None = None) -> None:
        if not is_utf8(rel):
            rel, reason = escape_name(rel), reason or "undecodable_path"
        entries.append(FileEntry(name, repo, license, str(root), rel, size, mtime_ns, reason))

    seen_dirs: set[tuple[int, int]] = set()
    # Depth-first over real directories; a directory reached a second time
    # (a symlink to an ancestor or to a tree already walked) is a loop.
    stack: list[tuple[Path, str]] = [(root, "")]
    progress = tqdm(desc=f"listing {name}", unit=" files", leave=False, mininterval=1.0,
                    disable=None)  # a redrawn bar is junk in a log file
    while stack:
        directory, rel_dir = stack.pop()
        try:
            st = os.stat(directory)
        except OSError:
            add(rel_dir or ".", reason="unreadable")
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            add(rel_dir, reason="symlink_loop")
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            add(rel_dir or ".", reason="unreadable")
            continue
        for child in children:
            if _excluded(child.name, exclude):
                continue
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            try:
                st = os.stat(child.path)  # follows symlinks
            except OSError as exc:
                add(rel, reason="symlink_loop" if exc.errno == errno.ELOOP else "unreadable")
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(child.path), rel))
                continue
            progress.update()
            if not stat.S_ISREG(st.st_mode):
                add(rel, reason="not_regular_file")
            elif lang_from_name(child.name) is None and has_extension(child.name):
                add(rel, st.st_size, st.st_mtime_ns, "unsupported_extension")
            elif st.st_size > max_file_bytes:
                add(rel, st.st_size, st.st_mtime_ns, "too_large")
            else:
                add(rel, st.st_size, st.st_mtime_ns)
    progress.close()
    entries.sort(key=lambda e: e.path)
    return entries


def listing_signature(entries: list[FileEntry]) -> str:
    """Hash of names, sizes and modification times: changes when the input does."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.source}\0{e.path}\0{e.size}\0{e.mtime_ns}\n".encode())
    return h.hexdigest()[:16]
