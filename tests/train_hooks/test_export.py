"""`codemill export-hf`: a checkpoint written by `train` loads in transformers as
LlamaForCausalLM and gives codemill's logits on real packed rows, with documents kept
apart by position ids or by a 4-D mask."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train_hooks import STDLIB, make_shards

from codemill.cli import main
from codemill.tokenize.tokenizer import train_tokenizer
from codemill.train_hooks.checkpoints import LATEST as CHECKPOINT
from codemill.train_hooks.dataset import ShardDataset, ShardLoader
from codemill.train_hooks.export import read_checkpoint
from codemill.train_hooks.model import ModelConfig, Transformer, document_mask
from codemill.train_hooks.train import tiny_config, train

torch.set_num_threads(1)
SEQ = 128


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A tiny model trained a few steps by `train` on shards of short real documents
    (most rows pack several), so that norms and every projection moved from their init."""
    root = tmp_path_factory.mktemp("export")
    texts = [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "json").glob("*.py"))]
    tok = train_tokenizer(texts, root / "tok", vocab_size=512, num_threads=1)
    docs = [t[i:i + 120] for t in texts for i in range(0, len(t), 120)]
    shards = make_shards(root / "code", tok, docs, seq_len=SEQ)
    base = tiny_config()
    # GQA, and a θ and eps other than transformers' defaults, so that a lost setting shows
    model = dataclasses.replace(base.model, dim=32, ffn_dim=96, n_heads=4, n_kv_heads=2,
                                rope_theta=50_000.0, norm_eps=1e-6)
    cfg = dataclasses.replace(base, model=model, steps=4, warmup_steps=1, lr=1e-2, global_batch_size=8,
                              micro_batch_size=4, log_every=2, checkpoint_every=4)
    train(cfg, [shards], root / "train")
    return {"root": root, "shards": shards, "train": root / "train"}


def real_rows(shards: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = next(iter(ShardLoader(ShardDataset([shards], micro_batch_size=8, seed=0), num_workers=0)))
    return batch["input_ids"].long(), batch["position_ids"].long()


def test_exported_model_gives_codemills_logits_on_packed_rows(run, capsys):
    from transformers import AutoModelForCausalLM

    out = run["root"] / "hf"
    assert main(["export-hf", str(run["train"]), "--tokenizer", str(run["shards"]), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    names = ["special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    assert sorted(summary["tokenizer_files"]) == names
    assert all((out / n).read_bytes() == (run["shards"] / n).read_bytes() for n in names)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["max_position_embeddings"] == SEQ

    ckpt = read_checkpoint(run["train"])
    assert (ckpt["model"]["layers.0.ffn_norm.weight"] - 1).abs().max() > 1e-2  # trained, not at init
    ours = Transformer(ModelConfig(**ckpt["model_config"])).eval()
    ours.load_state_dict(ckpt["model"])
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids, positions = real_rows(run["shards"])
    assert (positions[:, 1:] == 0).any()  # rows hold several documents
    close = dict(atol=2e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), **close)  # plainly causal
        expected = ours(ids, positions)
        # transformers finds the documents in the position ids when there is no cache
        torch.testing.assert_close(hf(ids, position_ids=positions, use_cache=False).logits, expected, **close)
        mask = document_mask(positions)  # (B, 1, L, L), True = may attend
        torch.testing.assert_close(hf(ids, position_ids=positions, attention_mask=mask).logits, expected, **close)
        hf.set_attn_implementation("eager")  # eager adds the mask to the scores: a float one
        additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        torch.testing.assert_close(hf(ids, position_ids=positions, attention_mask=additive).logits,
                                   expected, **close)


def test_bad_inputs_get_one_line_naming_the_file(run, tmp_path, capsys):
    def fails(*argv: str) -> str:
        assert main(["export-hf", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        return err

    assert f"{tmp_path / 'none'}: no such checkpoint" in fails(str(tmp_path / "none"), "--out", str(tmp_path / "a"))
    (tmp_path / "empty-run").mkdir()
    assert f"{tmp_path / 'empty-run' / CHECKPOINT}: no such" in fails(str(tmp_path / "empty-run"), "--out",
                                                                       str(tmp_path / "a"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run["train"] / CHECKPOINT).read_bytes()[:1000])
    assert f"{corrupt}: not a readable checkpoint" in fails(str(corrupt), "--out", str(tmp_path / "b"))
    other = train_tokenizer([(STDLIB / "json" / "decoder.py").read_text()] * 3, tmp_path / "other",
                            vocab_size=400, num_threads=1)
    err = fails(str(run["train"]), "--tokenizer", other.path, "--out", str(tmp_path / "c"))
    assert f"{other.path}: not the tokenizer the checkpoint was trained with" in err
    (tmp_path / "d").mkdir()
    shutil.copy(corrupt, tmp_path / "d")
    assert "is not empty" in fails(str(run["train"]), "--out", str(tmp_path / "d"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing half-written
