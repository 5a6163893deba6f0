"""ArrowFileSystem (pyarrow.fs) on a real S3-compatible server and on the local disk."""

from __future__ import annotations

import os
import re

import pytest

from codemill.storage import StorageError, filesystem
from codemill.storage.arrow import BLOCK, ArrowFileSystem
from codemill.storage.local import LocalFileSystem


def test_files_round_trip_on_s3(s3_bucket, tmp_path):
    fs, root = ArrowFileSystem(), f"{s3_bucket}/run"
    fs.write_bytes(f"{root}/a.bin", b"alpha")
    fs.write_text(f"{root}/sub/b.txt", "beta")
    assert fs.read_bytes(f"{root}/a.bin") == b"alpha" and fs.read_text(f"{root}/sub/b.txt") == "beta"
    assert fs.exists(root) and fs.is_dir(root) and fs.is_dir(s3_bucket)
    assert fs.exists(f"{root}/a.bin") and not fs.is_dir(f"{root}/a.bin")
    assert not fs.exists(f"{root}/nothing") and not fs.is_dir(f"{root}/nothing")
    assert [(f.uri, f.size) for f in fs.list_files(root)] == [(f"{root}/a.bin", 5), (f"{root}/sub/b.txt", 4)]
    assert [f.uri for f in fs.list_files(f"{root}/a.bin")] == [f"{root}/a.bin"]
    assert fs.list_files(f"{root}/nothing") == [] and fs.children(f"{root}/nothing") == []
    assert fs.children(root) == ["a.bin", "sub"]

    assert fs.create_new(f"{root}/a.bin", b"other") is False
    assert fs.read_bytes(f"{root}/a.bin") == b"alpha"
    assert fs.create_new(f"{root}/c.bin", b"gamma") is True
    assert fs.read_bytes(f"{root}/c.bin") == b"gamma"

    big = tmp_path / "big.bin"  # more than one block each way
    big.write_bytes(os.urandom(BLOCK + 12345))
    fs.upload(big, f"{root}/big.bin")
    fs.download(f"{root}/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()

    with pytest.raises(RuntimeError), fs.open_output(f"{root}/partial.bin") as out:
        out.write(b"half a file")
        raise RuntimeError("the writer failed")
    assert not fs.exists(f"{root}/partial.bin")

    fs.delete(f"{root}/sub")
    assert [f.uri for f in fs.list_files(root)] == [f"{root}/{n}" for n in ("a.bin", "big.bin", "c.bin")]
    fs.delete(f"{root}/a.bin")
    fs.delete(f"{root}/nothing")  # nothing there: not an error
    fs.delete(root)
    assert fs.list_files(s3_bucket) == [] and not fs.exists(root)


def test_s3a_is_the_same_store_and_uris_keep_their_scheme(s3_bucket):
    fs, s3a = ArrowFileSystem(), s3_bucket.replace("s3://", "s3a://")
    fs.write_bytes(f"{s3_bucket}/x/y.bin", b"why")
    assert fs.read_bytes(f"{s3a}/x/y.bin") == b"why"
    assert [f.uri for f in fs.list_files(s3a)] == [f"{s3a}/x/y.bin"]
    assert isinstance(filesystem(s3a), ArrowFileSystem)  # no SparkSession: pyarrow.fs


def test_errors_are_one_line_naming_the_uri(s3_bucket):
    fs = ArrowFileSystem()
    for uri, action in [
        (f"{s3_bucket}/missing.bin", fs.read_bytes),
        (f"{s3_bucket}/missing.bin", lambda u: fs.download(u, os.devnull)),
        ("s3://codemill-no-such-bucket/x.bin", lambda u: fs.write_bytes(u, b"x")),
        ("abfs://container@account/x.bin", fs.exists),
    ]:
        with pytest.raises(StorageError, match=re.escape(uri)) as caught:
            action(uri)
        assert "\n" not in str(caught.value)


def test_files_round_trip_on_the_local_disk(tmp_path):
    fs, root = ArrowFileSystem(), f"file://{tmp_path}/out"
    fs.write_bytes(f"{root}/a/b.bin", b"local")
    fs.write_text(f"{root}/c.txt", "text")
    assert fs.read_bytes(f"{root}/a/b.bin") == b"local"
    assert sorted(os.listdir(tmp_path / "out" / "a")) == ["b.bin"]  # no temporary left behind
    assert fs.list_files(root) == LocalFileSystem().list_files(root)
    assert fs.children(root) == ["a", "c.txt"]
    assert fs.create_new(f"{root}/c.txt", b"x") is False and fs.read_text(f"{root}/c.txt") == "text"
    with pytest.raises(RuntimeError), fs.open_output(f"{root}/partial.bin") as out:
        out.write(b"half")
        raise RuntimeError("the writer failed")
    assert sorted(os.listdir(tmp_path / "out")) == ["a", "c.txt"]
    fs.delete(root)
    assert not (tmp_path / "out").exists()
