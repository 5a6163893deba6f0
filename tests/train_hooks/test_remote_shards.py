"""Training shards in object storage: a real S3-compatible server (moto), real shards
packed with a real sentencepiece tokenizer, read through the local shard cache."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from codemill.errors import ConfigError
from codemill.storage import filesystem, join
from codemill.storage.cache import cached_shard_dir
from codemill.tokenize.fim import FimConfig
from codemill.tokenize.pack import PackConfig, PackStats, pack_documents
from codemill.tokenize.shards import ShardError, ShardWriter, read_manifest, verify_shards, write_manifest
from codemill.tokenize.tokenizer import train_tokenizer
from codemill.train_hooks.dataset import ShardDataset, ShardLoader
from codemill.train_hooks.shards import to_hf_dataset
from codemill.train_hooks.train import TrainConfig, tiny_config, train

torch.set_num_threads(1)  # see test_train_hooks: a shared machine

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEQ = 64


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """A shard directory named `code` of several files, packed from the stdlib's json package."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "json").glob("*.py"))]
    tmp = tmp_path_factory.mktemp("remote")
    tok = train_tokenizer(texts, tmp / "tok", vocab_size=400, num_threads=1)
    out, stats, pack = tmp / "code", PackStats(), PackConfig(seq_len=SEQ)
    docs = [(texts, [f"doc-{i}" for i in range(len(texts))])]
    with ShardWriter(out, SEQ, rows_per_batch=16, batches_per_shard=2) as writer:
        for rows in pack_documents(docs, tok, FimConfig(), pack, 0, stats):
            writer.write(rows)
    write_manifest(out, tokenizer=tok, pack=pack, fim=FimConfig(), seed=0, shards=writer.shards, stats=stats)
    assert len(writer.shards) >= 3
    return out


def upload(local: Path, uri: str) -> str:
    fs = filesystem(uri)
    for path in sorted(local.iterdir()):
        fs.upload(path, join(uri, path.name))
    return uri


def batches(ds: ShardDataset, n: int | None = None) -> list[dict]:
    out = []
    for batch in ShardLoader(ds):
        out.append(batch)
        if len(out) == n:
            break
    return out


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["index"] == y["index"]
        for key in ("input_ids", "labels", "position_ids", "cu_seqlens", "source", "row"):
            assert torch.equal(x[key], y[key]), key


def test_a_remote_directory_streams_and_resumes_like_the_local_one(s3_bucket, code, tmp_path):
    remote = upload(code, f"{s3_bucket}/shards/code")
    options = dict(micro_batch_size=4, seed=3, samples=4 * 12)
    local = ShardDataset([code], **options)
    from_s3 = ShardDataset([remote], cache_dir=tmp_path / "cache-a", **options)
    assert from_s3.names == ["code"] and from_s3.fingerprint == local.fingerprint
    whole = batches(local)
    assert_same(batches(from_s3), whole)

    # state taken on one copy resumes on another: another cache, the local directory
    first = ShardDataset([remote], cache_dir=tmp_path / "cache-a", **options)
    assert_same(batches(first, 5), whole[:5])
    state = json.loads(json.dumps(first.state_dict()))
    for dirs, cache in [([remote], tmp_path / "cache-b"), ([code], None)]:
        resumed = ShardDataset(dirs, cache_dir=cache, **options)
        resumed.load_state_dict(state)
        assert_same(batches(resumed), whole[5:])

    hf, hf_local = to_hf_dataset(remote, cache_dir=tmp_path / "cache-a"), to_hf_dataset(code)
    assert hf["input_ids"] == hf_local["input_ids"]


def test_the_cache_downloads_once_and_fetches_a_damaged_file_again(s3_bucket, code, tmp_path, monkeypatch):
    remote = upload(code, f"{s3_bucket}/shards/code")
    manifest = read_manifest(code)
    tokenizer = manifest["tokenizer"]
    files = [tokenizer["file"], *tokenizer["hf_files"]] + [s["file"] for s in manifest["shards"]]
    entry = cached_shard_dir(remote, tmp_path / "cache")
    assert entry.parent == tmp_path / "cache"
    for name in files:
        assert (entry / name).read_bytes() == (code / name).read_bytes()
    assert read_manifest(entry) == manifest and verify_shards(entry) == []
    assert {p.name for p in entry.iterdir()} == {*files, "manifest.json", ".verified.json", ".lock"}

    def identities() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()}

    before = identities()
    assert cached_shard_dir(remote, tmp_path / "cache") == entry
    assert identities() == before  # nothing downloaded, nothing rewritten

    victim = manifest["shards"][1]["file"]
    damaged = entry / victim
    with open(damaged, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert cached_shard_dir(remote, tmp_path / "cache") == entry
    assert damaged.read_bytes() == (code / victim).read_bytes()
    after = identities()
    assert after[victim] != before[victim]
    assert {n: after[n] for n in files if n != victim} == {n: before[n] for n in files if n != victim}

    monkeypatch.setenv("CODEMILL_CACHE", str(tmp_path / "env-cache"))
    assert cached_shard_dir(remote).parent == tmp_path / "env-cache"


def test_a_flipped_byte_in_a_remote_shard_is_refused(s3_bucket, code, tmp_path):
    remote = upload(code, f"{s3_bucket}/shards/code")
    data = bytearray((code / "shard-00001.arrow").read_bytes())
    data[len(data) // 2] ^= 0x01
    filesystem(remote).write_bytes(f"{remote}/shard-00001.arrow", bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ShardError, match=re.escape(f"{remote}/shard-00001.arrow: sha256")):
        ShardDataset([remote], cache_dir=cache)
    (entry,) = cache.iterdir()
    assert not (entry / "shard-00001.arrow").exists() and not (entry / "manifest.json").exists()


def test_shards_inspect_reads_s3(s3_bucket, code, tmp_path):
    remote = upload(code, f"{s3_bucket}/shards/code")
    env = {**os.environ, "CODEMILL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "codemill.cli", "shards", "inspect", remote, "--sample", "3"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"shards: {remote} (files in {tmp_path / 'cache'}/" in done.stdout
    assert "checksums: OK" in done.stdout and "sample sequence 3" in done.stdout


def test_committed_output_folders_resolve_remote_and_local(s3_bucket, code, tmp_path):
    output = f"{s3_bucket}/out/shards/code"
    upload(code, f"{output}/attempt-x")
    stale = f"{output}/attempt-stale"  # a crashed run's leftover: never read
    filesystem(stale).write_text(f"{stale}/manifest.json", '{"format": "unfinished"}')
    filesystem(output).write_text(f"{output}/_COMMIT.json", json.dumps({"attempt": "attempt-x", "files": []}))
    local_output = tmp_path / "out" / "code"
    (local_output / "attempt-y").mkdir(parents=True)
    for path in code.iterdir():
        (local_output / "attempt-y" / path.name).write_bytes(path.read_bytes())
    (local_output / "_COMMIT.json").write_text(json.dumps({"attempt": "attempt-y", "files": []}))

    expected = batches(ShardDataset([code], micro_batch_size=4), 3)
    for where in (output, local_output, f"file://{local_output}"):
        ds = ShardDataset([where], micro_batch_size=4, cache_dir=tmp_path / "cache")
        assert ds.names == ["code"]
        assert_same(batches(ds, 3), expected)
    assert cached_shard_dir(local_output) == local_output / "attempt-y"  # used in place, not copied
    assert read_manifest(output) == read_manifest(code)


def test_train_resumes_from_another_cache_dir(s3_bucket, code, tmp_path):
    remote = upload(code, f"{s3_bucket}/shards/code")
    base = tiny_config()
    cfg = dataclasses.replace(
        base, model=dataclasses.replace(base.model, dim=32, ffn_dim=96), steps=4, warmup_steps=1,
        global_batch_size=8, micro_batch_size=4, log_every=2, checkpoint_every=2,
    )
    whole = train(cfg, [code], tmp_path / "whole")
    first = train(dataclasses.replace(cfg, steps_per_run=2, cache_dir=str(tmp_path / "a")), [remote], tmp_path / "run")
    second = train(dataclasses.replace(cfg, cache_dir=str(tmp_path / "b")), [remote], tmp_path / "run", resume=True)
    assert first["losses"] + second["losses"] == whole["losses"]
    assert np.isfinite(whole["losses"]).all()
    with pytest.raises(ConfigError, match="cache_dir"):
        TrainConfig(cache_dir="s3://bucket/cache")
