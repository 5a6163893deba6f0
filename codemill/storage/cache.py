"""A local copy of a remote shard directory, so training memory-maps local files.

    cached_shard_dir("s3://bucket/shards/base/<fingerprint>") -> ~/.cache/codemill/shards/<key>/

The entry `<cache>/<key>/` (key: the sha256 of the resolved URI, so another attempt is
another entry) holds the manifest's shard files and tokenizer files, each checked against
the manifest's sha256 before it gets its name, and `manifest.json`, written last: an
entry with a manifest is complete. A stamp file remembers each verified file's size and
mtime, so a later call trusts an untouched file without reading it again and fetches
again one that was changed. A lock per entry lets the ranks of one machine share it:
the first downloads, the others wait and find it done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codemill.storage import display, filesystem, is_local, join, local_path, name, to_uri
from codemill.storage.base import FileSystem
from codemill.storage.commit import resolve
from codemill.storage.local import atomic_path, file_sha256, write_text_atomic
from codemill.tokenize.shard_format import MANIFEST, ShardError, read_manifest

DEFAULT_CACHE = "~/.cache/codemill/shards"
STAMPS = ".verified.json"
LOCK = ".lock"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CODEMILL_CACHE") or DEFAULT_CACHE).expanduser()


def cached_shard_dir(uri: str | os.PathLike, cache_dir: Path | None = None) -> Path:
    """A local directory holding the files of the shard directory `uri` (through its
    commit record if it is a pipeline output folder). Local ones are used in place;
    remote ones are downloaded once into `cache_dir` (default: `default_cache_dir()`)."""
    location = to_uri(uri)
    fs = filesystem(location)
    resolved = resolve(fs, location)
    if is_local(resolved):
        return local_path(resolved)
    manifest = read_manifest(resolved)
    entry = Path(cache_dir or default_cache_dir()).expanduser() / hashlib.sha256(resolved.encode()).hexdigest()[:16]
    entry.mkdir(parents=True, exist_ok=True)
    with _locked(entry):
        _fill(fs, resolved, manifest, entry)
    return entry


@contextmanager
def _locked(entry: Path) -> Iterator[None]:
    with open(entry / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _fill(fs: FileSystem, remote: str, manifest: Mapping[str, Any], entry: Path) -> None:
    tok = manifest["tokenizer"]
    wanted = {tok["file"]: tok["sha256"], **tok.get("hf_files", {})}  # hf_files: absent from older manifests
    wanted |= {s["file"]: s["sha256"] for s in manifest["shards"]}
    if _cached_manifest(entry) != manifest:
        (entry / MANIFEST).unlink(missing_ok=True)  # incomplete until written again
    _remove_strays(entry, set(wanted))
    old = _read_stamps(entry)
    missing = {f: sha for f, sha in wanted.items() if not _intact(entry / f, sha, old.get(f))}
    if missing:
        _download(fs, remote, entry, missing)
    stamps = {f: _stamp(entry / f, sha) for f, sha in wanted.items()}
    if stamps != old:
        write_text_atomic(entry / STAMPS, json.dumps(stamps, indent=1), encoding="utf-8")
    if not (entry / MANIFEST).exists():
        write_text_atomic(entry / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def _cached_manifest(entry: Path) -> Any:
    try:
        return json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove_strays(entry: Path, wanted: set[str]) -> None:
    """Files of an older manifest and temporaries of a killed download (the lock is held:
    nobody else is writing here)."""
    for path in entry.iterdir():
        if path.name not in wanted | {MANIFEST, STAMPS, LOCK}:
            path.unlink()


def _read_stamps(entry: Path) -> dict[str, Any]:
    try:
        return json.loads((entry / STAMPS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _stamp(path: Path, sha256: str) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _intact(path: Path, sha256: str, stamp: Mapping[str, Any] | None) -> bool:
    """Verified before and untouched since, or (a file from a killed run, or one that
    was changed) its bytes hash to `sha256`."""
    if not path.exists():
        return False
    return stamp == _stamp(path, sha256) or file_sha256(path) == sha256


def _download(fs: FileSystem, remote: str, entry: Path, files: Mapping[str, str]) -> None:
    from tqdm import tqdm

    sizes = {name(f.uri): f.size for f in fs.list_files(remote)}
    total = sum(sizes.get(f, 0) for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {display(remote)}") as progress:
        for file, sha256 in files.items():
            source = join(remote, file)
            with atomic_path(entry / file) as tmp:
                fs.download(source, tmp)
                if (got := file_sha256(tmp)) != sha256:
                    raise ShardError(f"{source}: sha256 {got[:16]}… differs from the manifest's {sha256[:16]}…")
            progress.update(sizes.get(file, 0))
