"""The shard loader and the training loop, on real shards packed from stdlib code."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from codemill.errors import ConfigError
from codemill.tokenize.fim import FimConfig
from codemill.tokenize.pack import PackConfig, PackStats, pack_documents
from codemill.tokenize.shards import (
    ShardError,
    ShardInfo,
    ShardWriter,
    read_manifest,
    write_manifest,
)
from codemill.train_hooks.checkpoints import LATEST, checkpoint_path, find_checkpoints, step_of
from codemill.train_hooks.dataset import (
    IGNORE,
    LoaderStateError,
    Mixture,
    Permutation,
    ShardDataset,
    ShardLoader,
)
from codemill.train_hooks.model import ModelConfig, Transformer, document_bounds, loss_sum
from codemill.train_hooks.shards import instruction_schema, to_hf_dataset
from codemill.train_hooks.train import (
    lcft_config,
    load_train_config,
    tiny_config,
    train,
)

# The test machine is shared: OpenMP threads spinning against other processes make
# small matmuls an order of magnitude slower than one thread.
torch.set_num_threads(1)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEQ = 64


def _pieces(paths: list[Path], limit: int) -> list[str]:
    """Real code cut into documents of 40-600 characters: shorter and longer than a row."""
    out, size = [], 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        cut = 0
        while cut < len(text) and size < limit:
            n = 40 + (len(out) * 97) % 560
            out.append(text[cut : cut + n])
            cut, size = cut + n, size + n
    return [t for t in out if t.strip()]


def make_shards(path: Path, tok, texts: list[str], seq_len: int = SEQ) -> Path:
    stats, pack = PackStats(), PackConfig(seq_len=seq_len)
    ids = [f"{path.name}-{i}" for i in range(len(texts))]
    # Small record batches and files, so rows come from many batches in several files.
    with ShardWriter(path, seq_len, rows_per_batch=16, batches_per_shard=3) as writer:
        for rows in pack_documents([(texts, ids)], tok, FimConfig(), pack, 0, stats):
            writer.write(rows)
    write_manifest(
        path, tokenizer=tok, pack=pack, fim=FimConfig(), seed=0, shards=writer.shards, stats=stats
    )
    return path


def read_rows(shard_dir: Path) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """Every row of a shard directory, the slow and obvious way."""
    m = read_manifest(shard_dir)
    table = pa.concat_tables(
        pa.ipc.open_stream(pa.memory_map(str(shard_dir / s["file"]))).read_all()
        for s in m["shards"]
    )
    ids = np.array(table.column("input_ids").to_pylist(), dtype=np.int32)
    return ids, table.column("doc_starts").to_pylist(), table.column("num_tokens").to_numpy()


def stream(
    dirs, weights=None, *, world=1, workers=0, b=4, samples, state=None, **kw
) -> dict[int, tuple]:
    """Global sample index -> (source, row, token bytes), read by every rank of a world."""
    out: dict[int, tuple] = {}
    for rank in range(world):
        ds = ShardDataset(
            dirs, weights, micro_batch_size=b, rank=rank, world_size=world, samples=samples, **kw
        )
        if state is not None:
            ds.load_state_dict(state)
        for batch in ShardLoader(ds, num_workers=workers):
            for j in range(b):
                k = batch["index"] * b + j
                assert k not in out, f"sample {k} read twice"
                out[k] = (
                    int(batch["source"][j]),
                    int(batch["row"][j]),
                    batch["input_ids"][j].numpy().tobytes(),
                )
    return out


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# --- the global index -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097])
def test_permutation_is_a_seeded_bijection(n):
    perm = Permutation(n, 0, "src", 0)
    assert sorted(perm(np.arange(n)).tolist()) == list(range(n))
    if n >= 64:
        other = Permutation(n, 0, "src", 1)(np.arange(n))
        assert not np.array_equal(perm(np.arange(n)), other)  # a new order every epoch
        assert np.array_equal(perm(np.arange(n)), Permutation(n, 0, "src", 0)(np.arange(n)))


def test_mixture_is_exact_per_global_batch():
    mix = Mixture([0.85, 0.08, 0.07])  # Code Llama's mix, paper Table 1
    source, index = mix(np.arange(100 * 30))
    for batch in source.reshape(30, 100):
        assert np.bincount(batch, minlength=3).tolist() == [85, 8, 7]
    for s in range(3):  # each source is read in order, nothing skipped or repeated
        assert index[source == s].tolist() == list(range(int((source == s).sum())))
    for n in (0, 1, 7, 99, 100, 1234, 3000):
        assert mix.counts(n) == np.bincount(source[:n], minlength=3).tolist()

    equal = Mixture([1.0, 1.0, 1.0])
    assert all(
        np.bincount(b, minlength=3).tolist() == [1, 1, 1]
        for b in equal(np.arange(300))[0].reshape(-1, 3)
    )
    awkward = Mixture([0.5, 0.3, 0.2])  # 7 · share is never whole: within a sample or so
    src = awkward(np.arange(7000))[0]
    cum = np.cumsum(np.eye(3)[src], axis=0)
    assert np.abs(cum - np.outer(np.arange(1, 7001), [0.5, 0.3, 0.2])).max() <= 1.0


# --- the dataset ------------------------------------------------------------------------


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2), (2, 1), (3, 0), (4, 2)])
def test_an_epoch_is_covered_once_for_any_ranks_and_workers(shards, world, workers):
    code = shards["code"]
    ids, _, _ = read_rows(code)
    n, b = len(ids), 2
    samples = _round_up(n, world * b)
    got = stream([code], world=world, workers=workers, b=b, samples=samples)
    assert sorted(got) == list(range(samples))  # disjoint, and nothing missing
    first_epoch = [got[k] for k in range(n)]
    assert sorted(row for _, row, _ in first_epoch) == list(range(n))
    assert all(data == ids[row].tobytes() for _, row, data in first_epoch)
    assert got == stream([code], b=b, samples=samples)  # the same stream as one process


def test_resume_continues_the_stream_on_other_ranks_workers_and_batch_sizes(shards):
    dirs, weights = [shards["code"], shards["other"]], [3.0, 1.0]
    reference = stream(dirs, weights, b=4, samples=48)

    first: dict[int, tuple] = {}
    states = []
    for rank in range(2):  # world 2, micro-batches of 2, one worker: 3 batches per rank
        ds = ShardDataset(dirs, weights, micro_batch_size=2, rank=rank, world_size=2)
        it = iter(ShardLoader(ds, num_workers=1))
        for _ in range(3):
            batch = next(it)
            for j in range(2):
                first[batch["index"] * 2 + j] = (
                    int(batch["source"][j]),
                    int(batch["row"][j]),
                    batch["input_ids"][j].numpy().tobytes(),
                )
        states.append(ds.state_dict())
        with pytest.raises(LoaderStateError, match="after iteration began"):
            ds.load_state_dict(states[-1])
        del it
    assert states[0] == states[1] and states[0]["samples"] == 12
    json.dumps(states[0])  # plain data: fits any checkpoint format

    rest = stream(dirs, weights, world=3, workers=2, b=4, samples=48, state=states[0])
    assert sorted(first) == list(range(12)) and sorted(rest) == list(range(12, 48))
    assert {**first, **rest} == reference

    odd = ShardDataset(dirs, weights, micro_batch_size=8)
    with pytest.raises(LoaderStateError, match="not a multiple"):
        odd.load_state_dict(states[0])


def test_mixing_shares_hold_in_every_global_batch(shards):
    dirs = [shards["code"], shards["other"]]
    rows = {name: len(read_rows(shards[name])[0]) for name in ("code", "other")}
    got = stream(dirs, [3.0, 1.0], world=2, workers=1, b=2, samples=400)
    sources = np.array([got[k][0] for k in range(400)])
    for batch in sources.reshape(-1, 8):  # global batches of 8 = 2 ranks × 2 × accumulation 2
        assert np.bincount(batch, minlength=2).tolist() == [6, 2]
    # 300 samples of `code` cycle through its epochs, each epoch in a new order.
    code_rows = [got[k][1] for k in range(400) if got[k][0] == 0]
    n = rows["code"]
    assert sorted(code_rows[:n]) == list(range(n))
    assert code_rows[n : 2 * n] != code_rows[:n]
    ds = ShardDataset(dirs, [3.0, 1.0], micro_batch_size=2, world_size=2, rank=0)
    assert ds.counts(400) == {"code": 300, "other": 100}
    assert ds.shares(400) == {"code": 0.75, "other": 0.25}
    assert ds.epochs(400)["code"] == pytest.approx(300 / n)


@pytest.mark.parametrize("long_context", [False, True])
def test_labels_positions_and_cu_seqlens(shards, long_context):
    code = shards["code"]
    ids, starts, num_tokens = read_rows(code)
    b, L = 4, SEQ
    ds = ShardDataset(
        [code], micro_batch_size=b, long_context=long_context, samples=_round_up(len(ids), b)
    )
    seen_padding = seen_mid_document = False
    for batch in ShardLoader(ds):
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int32
        bounds = {j * L for j in range(b + 1)}
        for j, row in enumerate(batch["row"].tolist()):
            doc = [] if long_context else starts[row]
            n = int(num_tokens[row])
            seen_padding |= n < L
            seen_mid_document |= 0 not in starts[row]
            bounds |= {j * L + s for s in doc}
            assert np.array_equal(batch["input_ids"][j].numpy(), ids[row])
            expected_pos = [t - max([0, *(s for s in doc if s <= t)]) for t in range(L)]
            assert batch["position_ids"][j].tolist() == expected_pos
            expected_labels = [
                int(ids[row][t + 1]) if t + 1 < n and t + 1 not in doc else IGNORE for t in range(L)
            ]
            assert batch["labels"][j].tolist() == expected_labels
        assert batch["cu_seqlens"].tolist() == sorted(bounds)
        assert batch["max_seqlen"] == max(np.diff(sorted(bounds)))
    assert seen_padding and seen_mid_document


def test_loud_errors_on_mismatched_shards_and_state(shards, tmp_path):
    code = shards["code"]
    with pytest.raises(ShardError, match="seq_len"):
        ShardDataset([code, shards["long"]])
    foreign = tmp_path / "foreign"
    shutil.copytree(code, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="another tokenizer"):
        ShardDataset([code, foreign])
    with pytest.raises(ValueError, match="loss_spans"):
        ShardDataset([code], answers_only=True)

    state = ShardDataset([code], seed=0).state_dict()
    with pytest.raises(LoaderStateError, match="seed"):
        ShardDataset([code], seed=1).load_state_dict(state)
    both = ShardDataset([code, shards["other"]], weights=[1, 1]).state_dict()
    with pytest.raises(LoaderStateError, match="order"):  # the same sources, another stream
        ShardDataset([shards["other"], code], weights=[1, 1]).load_state_dict(both)
    changed = tmp_path / "changed" / "code"  # same name, other content
    shutil.copytree(code, changed)
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "f" * 64
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoaderStateError, match=r"sources changed: \['code'\]"):
        ShardDataset([changed]).load_state_dict(state)
    with open(changed / "shard-00001.arrow", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ShardError, match="bytes, the manifest says"):
        ShardDataset([changed])


def test_to_hf_dataset_holds_the_same_rows(shards):
    dirs = [shards["code"], shards["other"]]
    hf = to_hf_dataset(dirs).with_format("numpy")
    rows = [read_rows(d)[0] for d in dirs]
    assert hf.num_rows == sum(len(r) for r in rows)
    assert np.array_equal(np.stack(hf["input_ids"]), np.concatenate(rows))
    batch = next(iter(ShardLoader(ShardDataset(dirs, micro_batch_size=8))))
    offsets = [0, len(rows[0])]
    for j, (s, r) in enumerate(zip(batch["source"].tolist(), batch["row"].tolist())):
        assert np.array_equal(hf[offsets[s] + r]["input_ids"], batch["input_ids"][j].numpy())


def make_instruction_shards(path: Path, tok, examples: list[tuple[str, str]]) -> Path:
    """One chat example per row: <s> [INST] question [/INST] answer </s>, answer + EOS trained."""
    schema = instruction_schema(SEQ)
    ids, starts, counts, spans = [], [], [], []
    for question, answer in examples:
        prompt = [tok.bos_id, *tok.encode(f"[INST] {question} [/INST]")]
        reply = [*tok.encode(f" {answer}"), tok.eos_id]
        seq = (prompt + reply)[:SEQ]
        ids.append(seq + [tok.eos_id] * (SEQ - len(seq)))
        starts.append([0])
        counts.append(len(seq))
        spans.append([len(prompt), len(seq)])
    path.mkdir(parents=True)
    table = pa.table(
        [
            pa.array(ids, schema.field("input_ids").type),
            pa.array(starts, schema.field("doc_starts").type),
            pa.array(counts, pa.int32()),
            pa.array(spans, schema.field("loss_spans").type),
        ],
        schema=schema,
    )
    shard = path / "shard-00000.arrow"
    with pa.ipc.new_stream(str(shard), schema) as writer:
        writer.write_table(table)
    data = shard.read_bytes()
    info = ShardInfo(shard.name, len(ids), len(data), hashlib.sha256(data).hexdigest())
    stats = PackStats(
        sequences=len(ids), tokens=sum(counts), docs_in=len(ids), docs_packed=len(ids)
    )
    write_manifest(
        path,
        tokenizer=tok,
        pack=PackConfig(seq_len=SEQ),
        fim=FimConfig(rate=0.0),
        seed=0,
        shards=[info],
        stats=stats,
    )
    return path


def test_instruction_mode_takes_the_loss_on_answers_only(tok, tmp_path):
    examples = [
        (f"Return the sum of {i} and {i + 1}.", f"def f():\n    return {i} + {i + 1}\n")
        for i in range(16)
    ]
    inst = make_instruction_shards(tmp_path / "instruct", tok, examples)
    ds = ShardDataset([inst], micro_batch_size=4, answers_only=True, samples=16)
    schema_rows = pa.ipc.open_stream(pa.memory_map(str(inst / "shard-00000.arrow"))).read_all()
    spans = schema_rows.column("loss_spans").to_pylist()
    for batch in ShardLoader(ds):
        for j, row in enumerate(batch["row"].tolist()):
            start, end = spans[row]
            trained = (batch["labels"][j] != IGNORE).nonzero().flatten().tolist()
            assert trained == list(range(start - 1, end - 1))  # positions predicting answer tokens
            assert batch["labels"][j, start - 1] == batch["input_ids"][j, start]
    cfg = dataclasses.replace(
        _tiny(), answers_only=True, steps=2, global_batch_size=4, micro_batch_size=4
    )
    summary = train(cfg, [inst], tmp_path / "run")
    assert all(math.isfinite(x) for x in summary["losses"])


# --- the model ---------------------------------------------------------------------------


def test_attention_stays_inside_documents():
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    )
    a, b = torch.randint(0, 100, (1, 10)), torch.randint(0, 100, (1, 22))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(10), torch.arange(22)])[None]
    with torch.no_grad():
        together = model(packed, positions)
        alone = torch.cat([model(a), model(b)], dim=1)
        leaky = model(packed)  # one causal sequence: b sees a
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(leaky[:, 10:], alone[:, 10:], atol=1e-3)


def test_per_document_attention_gives_the_masked_loss_on_packed_rows(shards):
    loader = ShardLoader(ShardDataset([shards["code"]], micro_batch_size=8))
    batch = next(b for b in loader if len(b["cu_seqlens"]) - 1 >= 12)  # rows holding several documents
    assert torch.equal(document_bounds(batch["position_ids"]), batch["cu_seqlens"])
    cfg = ModelConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176)
    torch.manual_seed(0)
    dense = Transformer(cfg, "dense")
    documents = Transformer(cfg, "documents")
    documents.load_state_dict(dense.state_dict())
    n = int((batch["labels"] != IGNORE).sum())
    losses, grads = [], []
    # the loader's boundaries, or boundaries found from the position ids
    for model, bounds in ((dense, None), (documents, batch["cu_seqlens"]), (documents, None)):
        model.zero_grad()
        loss = loss_sum(model(batch["input_ids"], batch["position_ids"], bounds), batch["labels"]) / n
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6, abs=0) and losses[2] == losses[1]
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_a_tiny_model_overfits_one_batch(shards):
    batch = next(iter(ShardLoader(ShardDataset([shards["code"]], micro_batch_size=4))))
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    n = int((batch["labels"] != IGNORE).sum())
    losses = []
    for _ in range(60):
        loss = loss_sum(model(batch["input_ids"], batch["position_ids"]), batch["labels"]) / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 6.0 and losses[-1] < losses[0] / 5


# --- the training loop ---------------------------------------------------------------------


def _tiny(**changes) -> dataclasses.dataclass:
    base = tiny_config()
    model = dataclasses.replace(base.model, dim=32, ffn_dim=96)
    cfg = dataclasses.replace(
        base,
        model=model,
        steps=8,
        warmup_steps=2,
        global_batch_size=8,
        micro_batch_size=4,
        log_every=2,
        checkpoint_every=4,
    )
    return dataclasses.replace(cfg, **changes)


def test_checkpoints_resume_to_the_same_losses(shards, tmp_path):
    dirs = [shards["code"], shards["other"]]
    whole = train(_tiny(weights={"code": 3.0, "other": 1.0}), dirs, tmp_path / "whole")
    assert len(whole["losses"]) == 8 and whole["final_loss"] < whole["first_loss"]

    cfg = _tiny(weights={"code": 3.0, "other": 1.0})
    first = train(dataclasses.replace(cfg, steps_per_run=3), dirs, tmp_path / "split")
    shutil.copytree(tmp_path / "split", tmp_path / "reshaped")
    second = train(cfg, dirs, tmp_path / "split", resume=True)
    assert first["losses"] + second["losses"] == whole["losses"]  # exactly
    # Another split of the global batch (micro-batches of 2, a loader worker): the same
    # computation up to the order of floating-point sums.
    reshaped = train(
        dataclasses.replace(cfg, micro_batch_size=2, num_workers=1),
        dirs,
        tmp_path / "reshaped",
        resume=True,
    )
    np.testing.assert_allclose(reshaped["losses"], whole["losses"][3:], rtol=1e-5)

    history = [
        json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in history] == list(range(1, 9))
    assert (tmp_path / "split" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = torch.load(tmp_path / "split" / LATEST, weights_only=True)
    assert ckpt["step"] == 8 and ckpt["loader"]["samples"] == 64
    # optimizer state by index, as checkpoints were before FSDP: refused with why
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    ckpt["optimizer"] = torch.optim.AdamW(model.parameters()).state_dict()
    old = shutil.copytree(tmp_path / "split", tmp_path / "old")
    torch.save(ckpt, old / checkpoint_path(old, 8).name)
    with pytest.raises(ConfigError, match=r"checkpoint-00000008\.pt: its optimizer state is by parameter index"):
        train(cfg, dirs, old, resume=True)
    with pytest.raises(ConfigError, match="lr"):
        train(dataclasses.replace(cfg, lr=1e-2, steps=9), dirs, tmp_path / "split", resume=True)


def test_long_context_fine_tuning_starts_from_a_checkpoint(shards, tmp_path):
    base = train(_tiny(steps=40, lr=1e-2), [shards["code"]], tmp_path / "base")
    lcft = lcft_config(base["checkpoint"], base=_tiny())
    assert lcft.model.rope_theta == 1e6 and lcft.seq_len == 16384 and lcft.long_context
    lcft = dataclasses.replace(
        lcft, seq_len=256, steps=3, warmup_steps=1, global_batch_size=4, micro_batch_size=2
    )
    tuned = train(lcft, [shards["long"]], tmp_path / "lcft")
    fresh = train(dataclasses.replace(lcft, init_from=""), [shards["long"]], tmp_path / "fresh")
    assert tuned["model"]["rope_theta"] == 1e6
    assert torch.load(tuned["checkpoint"], weights_only=True)["model_config"]["rope_theta"] == 1e6
    assert tuned["first_loss"] < fresh["first_loss"] - 0.5  # the weights came along
    with pytest.raises(ConfigError, match="seq_len"):
        train(dataclasses.replace(lcft, seq_len=16384), [shards["long"]], tmp_path / "wrong")


def test_train_config_from_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "tiny"\nsteps = 5\nweights = { code = 3.0 }\n[model]\ndim = 16\n')
    cfg = load_train_config(path, ["lr=0.01"])
    assert (cfg.steps, cfg.model.dim, cfg.model.n_layers, cfg.lr) == (5, 16, 2, 0.01)
    assert cfg.weights == {"code": 3.0}
    paper = load_train_config()
    assert (paper.beta1, paper.beta2, paper.weight_decay, paper.seq_len) == (0.9, 0.95, 0.1, 4096)
    assert paper.global_batch_size * paper.seq_len == 4 * 2**20
    path.write_text("stepz = 5\n")
    with pytest.raises(ConfigError, match=r"stepz: unknown key; did you mean 'steps'\?"):
        load_train_config(path)
    # the same loader as the run config: ranges, cross-field rules, where a value came from
    with pytest.raises(ConfigError, match=r"lr: 0.0 is out of range.*\(from --set lr=0\)"):
        load_train_config(None, ["lr=0"])
    with pytest.raises(ConfigError, match=r"model.n_heads: dim 64 must split into 5 heads"):
        load_train_config(None, ["preset=tiny", "model.n_heads=5"])
    with pytest.raises(ConfigError, match=r"preset: 'huge' is not one of .*\(from --set preset=huge\)"):
        load_train_config(None, ["preset=huge"])


def test_ddp_under_torchrun_matches_one_process(shards, tmp_path):
    # (FSDP, the default for several ranks: test_parallel.py)
    config = tmp_path / "tiny.toml"
    config.write_text(
        'preset = "tiny"\nsteps = 3\nwarmup_steps = 1\nglobal_batch_size = 8\n'
        'micro_batch_size = 4\nlog_every = 1\nparallel = "ddp"\n[model]\ndim = 32\nffn_dim = 96\n'
    )
    single = train(load_train_config(config), [shards["code"]], tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "codemill.train_hooks.train", "--config", str(config)]
    run = subprocess.run([*torchrun, str(shards["code"]), "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    two = [
        json.loads(x)["loss"] for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    ]
    np.testing.assert_allclose(two, single["losses"], rtol=1e-5)

    # the machine's first rank verifies the shards; a mismatch stops both ranks with its message
    flipped = shutil.copytree(shards["code"], tmp_path / "code")
    victim = flipped / "shard-00001.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    run = subprocess.run([*torchrun, str(flipped), "--out", str(tmp_path / "three")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines()
              if "ConfigError: " in line and "shard-00001.arrow: sha256 differs from the manifest" in line]
    assert sorted(line.split(":")[0] for line in errors) == ["[rank0]", "[rank1]"], run.stderr[-3000:]


def test_resume_needs_a_checkpoint_unless_auto_and_a_broken_one_is_named(shards, tmp_path):
    dirs = [shards["code"]]
    cfg = dataclasses.replace(_tiny(), steps_per_run=1)
    with pytest.raises(ConfigError, match=r"no checkpoint in .*run \(checkpoint-<step>\.pt.*--resume=auto"):
        train(cfg, dirs, tmp_path / "run", resume=True)
    assert len(train(cfg, dirs, tmp_path / "run", resume="auto")["losses"]) == 1  # fresh start
    checkpoint = checkpoint_path(tmp_path / "run", 1)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ConfigError, match=r"checkpoint-00000001\.pt: not a readable checkpoint.*no earlier one"):
        train(cfg, dirs, tmp_path / "run", resume="auto")


def test_the_last_checkpoints_are_kept_and_a_broken_newest_offers_the_one_before(shards, tmp_path):
    dirs, out = [shards["code"]], tmp_path / "run"
    cfg = _tiny(checkpoint_every=2, keep_checkpoints=2)  # 8 steps

    def kept() -> list[int]:
        return [step_of(p) for p in find_checkpoints(out)]

    assert train(dataclasses.replace(cfg, steps_per_run=6), dirs, out)["checkpoint"] == str(checkpoint_path(out, 6))
    assert kept() == [4, 6] and (out / LATEST).resolve() == checkpoint_path(out, 6)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # each written under a temporary name
    newest = checkpoint_path(out, 6)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"checkpoint-00000006\.pt: not a readable checkpoint .*the one before is "
                       r".*checkpoint-00000004\.pt \(step 4\): move checkpoint-00000006\.pt away and --resume"):
        train(cfg, dirs, out, resume=True)
    newest.rename(tmp_path / "broken.pt")
    resumed = train(cfg, dirs, out, resume=True)
    assert resumed["steps"] == 8 and len(resumed["losses"]) == 4 and kept() == [6, 8]
    # a run that starts over replaces them
    train(dataclasses.replace(cfg, steps_per_run=2), dirs, out)
    assert kept() == [2] and (out / LATEST).resolve() == checkpoint_path(out, 2)
    with pytest.raises(ConfigError, match=r"keep_checkpoints: 0 is out of range: must be in \[1, 1000\]"):
        load_train_config(None, ["keep_checkpoints=0"])


def test_shards_are_verified_before_training_and_once_per_unchanged_file(shards, tmp_path):
    flipped = tmp_path / "code"
    shutil.copytree(shards["code"], flipped)
    cfg = dataclasses.replace(_tiny(), steps_per_run=1)
    assert len(train(cfg, [flipped], tmp_path / "run")["losses"]) == 1
    digests = json.loads((tmp_path / "run" / "verified-shards.json").read_text())
    assert any("shard-00000.arrow" in key for key in digests)  # a restart hashes nothing again
    victim = flipped / "shard-00000.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: the modification time tells it changed
    victim.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"shard-00000\.arrow: sha256 differs.*--no-verify"):
        train(cfg, [flipped], tmp_path / "run")  # the kept digest is of the file before
    assert len(train(dataclasses.replace(cfg, verify_shards=False), [flipped], tmp_path / "run3")["losses"]) == 1
