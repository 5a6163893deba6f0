"""The held-out slice: rows the training stream never reads, and the loss on them."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from test_train_hooks import _tiny, stream

from codemill.errors import ConfigError
from codemill.train_hooks.checkpoints import LATEST
from codemill.train_hooks.dataset import HELD_OUT_RUN, IGNORE, LoaderStateError, ShardDataset
from codemill.train_hooks.model import ModelConfig, Transformer, loss_sum
from codemill.train_hooks.train import load_train_config, train

torch.set_num_threads(1)  # see test_train_hooks: a shared machine


def test_held_out_rows_never_enter_the_stream(shards):
    code = shards["code"]
    ds = ShardDataset([code], held_out_rows=32)
    rows = ds.readers[0].rows
    held = ds.splits[0].held_out()
    assert len(held) == 32 and len(set((held // HELD_OUT_RUN).tolist())) == 1  # one run of 32 rows
    training = sorted(set(range(rows)) - set(held.tolist()))
    n = len(training)
    got = stream([code], b=4, samples=2 * n, held_out_rows=32)
    for epoch in range(2):  # every training row once per epoch, no held-out one ever
        assert sorted(got[k][1] for k in range(epoch * n, (epoch + 1) * n)) == training
    assert stream([code], world=2, workers=1, b=2, samples=2 * n, held_out_rows=32) == got

    bigger = ShardDataset([code], held_out_rows=64).splits[0].held_out()
    assert set(held.tolist()) < set(bigger.tolist())  # a larger slice keeps the smaller one
    with pytest.raises(LoaderStateError, match="held_out"):  # another stream: no resuming across
        ShardDataset([code]).load_state_dict(ds.state_dict())
    assert ShardDataset([code]).index(np.arange(8))[1].tolist() == ShardDataset([code], held_out_rows=0).index(
        np.arange(8))[1].tolist()


@pytest.mark.parametrize("world,b", [(1, 4), (2, 2), (3, 4)])
def test_every_rank_reads_its_share_of_the_slice_once(shards, world, b):
    dirs = [shards["code"], shards["other"]]
    seen, batches = [], []
    for rank in range(world):
        ds = ShardDataset(dirs, held_out_rows=32, micro_batch_size=b, rank=rank, world_size=world)
        mine = list(ds.held_out_batches())
        batches.append(len(mine))
        for batch in mine:
            for j in range(b):
                if (batch["labels"][j] != IGNORE).any():  # rows filling the last batches have no labels
                    seen.append((int(batch["source"][j]), int(batch["row"][j])))
        assert ds.state_dict()["samples"] == 0  # the training stream did not move
    assert len(set(batches)) == 1  # as many forward passes on every rank
    expected = [(s, int(r)) for s, split in enumerate(ds.splits) for r in split.held_out()]
    assert sorted(seen) == sorted(expected) and len(expected) == 64


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out) -> list[tuple]:
    return [(r["step"], r["loss"], r.get("eval_loss"), r.get("eval_losses")) for r in _metrics(out)]


def test_held_out_loss_is_logged_resumes_and_is_the_mean_over_the_slice(shards, tmp_path):
    dirs = [shards["code"], shards["other"]]
    cfg = _tiny(eval_every=3, eval_rows=32)  # 8 steps: held-out losses at 3, 6 and the last
    whole = train(cfg, dirs, tmp_path / "whole")
    history = _metrics(tmp_path / "whole")
    judged = [r for r in history if "eval_loss" in r]
    assert [r["step"] for r in judged] == [3, 6, 8] and whole["eval_losses"] == [
        (r["step"], r["eval_loss"]) for r in judged]
    assert set(judged[0]["eval_losses"]) == {"code", "other"}
    assert (tmp_path / "whole" / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # the last one is the mean loss of the final weights over every label of the held-out rows
    ckpt = torch.load(tmp_path / "whole" / LATEST, weights_only=True)
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    total = tokens = 0.0
    with torch.no_grad():
        for batch in ShardDataset(dirs, held_out_rows=32, micro_batch_size=5).held_out_batches():
            total += float(loss_sum(model(batch["input_ids"], batch["position_ids"]), batch["labels"]))
            tokens += int((batch["labels"] != IGNORE).sum())
    assert judged[-1]["eval_loss"] == pytest.approx(total / tokens, rel=1e-5)

    # stopped after step 4 and resumed: the same losses, held-out ones included
    train(dataclasses.replace(cfg, steps_per_run=4), dirs, tmp_path / "split")
    shutil.copytree(tmp_path / "split", tmp_path / "other-eval")
    train(cfg, dirs, tmp_path / "split", resume=True)
    assert _losses(tmp_path / "split") == _losses(tmp_path / "whole")
    # how often it is judged may change on resume, which rows are held out may not
    assert train(dataclasses.replace(cfg, eval_every=2), dirs, tmp_path / "other-eval", resume=True)[
        "eval_losses"] == [(6, judged[1]["eval_loss"]), (8, judged[2]["eval_loss"])]
    with pytest.raises(ConfigError, match=r"cannot resume: .*held-out rows \(eval_every, eval_rows\)"):
        train(dataclasses.replace(cfg, eval_every=0), dirs, tmp_path / "split", resume=True)


def test_held_out_settings_are_range_checked(shards, tmp_path):
    with pytest.raises(ConfigError, match=r"eval_rows: 48 is not a multiple of 32"):
        load_train_config(None, ["eval_rows=48"])
    with pytest.raises(ConfigError, match=r"eval_every: -1 is out of range"):
        load_train_config(None, ["eval_every=-1"])
    with pytest.raises(ConfigError, match=r"eval_rows: other: cannot hold out 64 of its \d+ rows"):
        train(_tiny(eval_every=2, eval_rows=64), [shards["code"], shards["other"]], tmp_path / "run")
