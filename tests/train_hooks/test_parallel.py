"""FSDP2 under torchrun (2 gloo ranks on the CPU), activation checkpointing and torch.compile."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_hooks import _tiny

from codemill.errors import ConfigError
from codemill.train_hooks.checkpoints import LATEST, find_checkpoints, step_of
from codemill.train_hooks.train import load_train_config, train

torch.set_num_threads(1)  # see test_train_hooks: a shared machine

CONFIG = """preset = "tiny"
steps = 6
warmup_steps = 1
global_batch_size = 8
micro_batch_size = 2
log_every = 1
checkpoint_every = 2
keep_checkpoints = 10
eval_every = 3
eval_rows = 32
[model]
dim = 32
ffn_dim = 96
"""


def torchrun(config: Path, dirs: list[Path], out: Path, *flags: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "codemill.train_hooks.train", "--config", str(config), *map(str, dirs), "--out", str(out), *flags]
    run = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def losses(out: Path) -> list[tuple]:
    """What a run computed, step by step (not how fast)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"], r.get("eval_loss")) for r in records]


def test_fsdp_matches_one_process_and_a_killed_run_resumes_exactly(shards, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    dirs = [shards["code"], shards["other"]]
    single = train(load_train_config(config), dirs, tmp_path / "one")
    torchrun(config, dirs, tmp_path / "fsdp")  # FSDP2: the default for several ranks
    sharded = losses(tmp_path / "fsdp")
    np.testing.assert_allclose([r[1] for r in sharded], single["losses"], rtol=1e-5)
    judged = [(r[0], r[3]) for r in sharded if r[3] is not None]  # every rank's share of the slice
    assert [step for step, _ in judged] == [step for step, _ in single["eval_losses"]] == [3, 6]
    np.testing.assert_allclose([x for _, x in judged], [x for _, x in single["eval_losses"]], rtol=1e-5)
    ckpt = torch.load(tmp_path / "fsdp" / LATEST, weights_only=True)
    whole = torch.load(tmp_path / "one" / LATEST, weights_only=True)
    assert {k: v.shape for k, v in ckpt["model"].items()} == {k: v.shape for k, v in whole["model"].items()}
    assert ckpt["optimizer"]["state"].keys() == whole["optimizer"]["state"].keys()  # by name, gathered whole

    # killed during step 5: the checkpoints of steps 4 and 6 never written, metrics up to step 5 kept.
    # Resumed with activation checkpointing on (it may change): every loss as before, exactly.
    killed = shutil.copytree(tmp_path / "fsdp", tmp_path / "killed")
    for path in find_checkpoints(killed):
        if step_of(path) > 2:
            path.unlink()
    torchrun(config, dirs, killed, "--resume", "--set", "activation_checkpointing=true")
    assert losses(killed) == sharded

    # the sharded run's checkpoint resumes in one process too: the same computation
    alone = shutil.copytree(tmp_path / "fsdp", tmp_path / "alone")
    for path in find_checkpoints(alone):
        if step_of(path) > 4:
            path.unlink()
    resumed = train(load_train_config(config), dirs, alone, resume=True)
    np.testing.assert_allclose(resumed["losses"], [r[1] for r in sharded[4:]], rtol=1e-5)


def test_activation_checkpointing_and_compile_compute_the_same_losses(shards, tmp_path):
    cfg = _tiny(steps=2)
    plain = train(cfg, [shards["code"]], tmp_path / "plain")["losses"]
    checkpointed = train(dataclasses.replace(cfg, activation_checkpointing=True), [shards["code"]], tmp_path / "ac")
    assert checkpointed["losses"] == plain
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(dataclasses.replace(cfg, compile=True), [shards["code"]], tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 1  # the blocks did compile
    np.testing.assert_allclose(compiled["losses"], plain, rtol=1e-5)


def test_compile_that_cannot_work_here_is_a_clear_error_before_training(shards, tmp_path, monkeypatch):
    def no_compiler(fn, **_):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    expected = (r"compile: torch.compile does not work on cpu here \(RuntimeError: InvalidCxxCompiler: "
                r"No working C\+\+ compiler found\); set compile = false")
    with pytest.raises(ConfigError, match=expected):
        train(_tiny(compile=True), [shards["code"]], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_parallel_and_attention_settings_are_checked():
    with pytest.raises(ConfigError, match=r"parallel: 'zero3' is not one of \['fsdp', 'ddp'\]"):
        load_train_config(None, ['parallel="zero3"'])
    with pytest.raises(ConfigError, match=r"attention: 'flash' is not one of \['documents', 'dense'\]"):
        load_train_config(None, ['attention="flash"'])
