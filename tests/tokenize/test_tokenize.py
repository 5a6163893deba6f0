"""Tokenizer, FIM, packing and shards on real sentencepiece models trained on the stdlib."""

from __future__ import annotations

import hashlib
import json
import pickle
import sysconfig
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import sentencepiece as spm

from codemill.storage.folder import Folder
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.fim import (
    MODES,
    draw_fim,
    encode_documents,
    fim_transform,
    render,
    undo_fim,
)
from codemill.tokenize.pack import PackStats, SequencePacker, pack_documents
from codemill.tokenize.shards import (
    MANIFEST,
    ShardError,
    ShardWriter,
    fim_layout,
    inspect_shards,
    read_manifest,
    verify_shards,
    write_manifest,
)
from codemill.tokenize.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
EDGE_STRINGS = [
    "",
    "x",
    "\tindented\twith\ttabs\n\t\tand more\n",
    "trailing spaces   \nand tabs\t\t\n",
    "windows\r\nline\r\nendings\r\n",
    "non-ASCII: héllo wörld, 日本語, emoji 🙂, combining e\u0301, RTL שלום\n",
    "\n\n\nblank lines\n\n\n\nbetween\n\n",
    "   leading spaces",
    " ",
    "\n",
    "   \n\t \r\n",
    "digits 1234567890 and 3.14159e-10\n",
    "literal markers <PRE> <SUF> <MID> <EOT> <s> </s>\n",
    "nul\x00byte and \x7f del",
]


# --- tokenizer -----------------------------------------------------------------------


def test_trained_tokenizer_settings(tok):
    assert tok.vocab_size == 3000
    assert not tok.dummy_prefix
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert len({tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id}) == 4
    # Newlines and indentation are learned pieces, not byte fallback.
    assert tok.id_to_piece(tok.encode("\n")[0]) == "\n"
    assert "<0x0A>" not in [tok.id_to_piece(i) for i in tok.encode("def f():\n    return 1\n")]
    # Digits are split one per token.
    assert [tok.id_to_piece(i) for i in tok.encode("2024")] == ["2", "0", "2", "4"]


def test_roundtrip_real_files(tok, llama_tok, corpus, held_out):
    for t in (tok, llama_tok):
        for text in corpus + held_out:
            assert t.decode(t.encode(text)) == text
            assert t.decode_no_prefix(t.encode_no_prefix(text)) == text


@pytest.mark.parametrize("text", EDGE_STRINGS)
def test_roundtrip_edge_strings(tok, llama_tok, text):
    for t in (tok, llama_tok):
        assert t.decode(t.encode(text)) == text
        assert t.decode_no_prefix(t.encode_no_prefix(text)) == text
    assert [a.tolist() for a in tok.encode_batch([text, text])] == [tok.encode(text)] * 2


def test_infilling_markers_cannot_be_forged_by_text(tok):
    ids = tok.encode("<PRE> <SUF> <MID> <EOT>")
    assert not {tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id, tok.bos_id, tok.eos_id} & set(ids)


def test_encode_no_prefix_drops_only_the_implicit_space(tok, llama_tok):
    assert tok.encode_no_prefix("def f") == tok.encode("def f")
    # With a dummy prefix, enc adds "▁" in front; enc' does not.
    assert llama_tok.id_to_piece(llama_tok.encode("x = 1")[0]).startswith("▁")
    assert not llama_tok.id_to_piece(llama_tok.encode_no_prefix("x = 1")[0]).startswith("▁")
    assert llama_tok.decode(llama_tok.encode_no_prefix(" x")) != " x"  # why decode' exists
    assert llama_tok.decode_no_prefix(llama_tok.encode_no_prefix(" x")) == " x"


def test_load_finds_code_llama_spelling(llama_tok):
    assert llama_tok.dummy_prefix
    t = llama_tok
    pieces = [t.id_to_piece(i) for i in (t.pre_id, t.suf_id, t.mid_id, t.eot_id)]
    assert pieces == ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]


def test_load_errors_name_the_file(tmp_path, corpus):
    missing = tmp_path / "nope.model"
    with pytest.raises(TokenizerError, match="nope.model"):
        load_tokenizer(missing)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="garbage.model"):
        load_tokenizer(garbage)
    plain = tmp_path / "plain"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[:5]), model_prefix=str(plain), vocab_size=300, model_type="bpe",
        max_sentence_length=1 << 30, num_threads=1, minloglevel=2,
    )
    with pytest.raises(TokenizerError, match=r"plain\.model.*<PRE>, <SUF>, <MID>, <EOT>"):
        load_tokenizer(f"{plain}.model")


def test_pickle_reloads_by_path_and_checks_content(tok, tmp_path, corpus):
    assert pickle.loads(pickle.dumps(tok)) is tok  # the per-process cache
    other = train_tokenizer(corpus[:20], tmp_path / "m", vocab_size=600, num_threads=1)
    blob = pickle.dumps(other)
    train_tokenizer(corpus[20:40], tmp_path / "m", vocab_size=600, num_threads=1)  # file replaced
    with pytest.raises(TokenizerError, match="m.model.*the file changed"):
        pickle.loads(blob)
    (tmp_path / "m.model").rename(tmp_path / "elsewhere.model")
    with pytest.raises(TokenizerError, match="m.model does not exist.*SparkContext.addFile"):
        pickle.loads(blob)


# --- FIM -----------------------------------------------------------------------------

TEXT = "def add(a, b):\n    # Sum two numbers.\n    return a + b  \n\n\nprint(add(1, 2))\n"


def _doc_with(mode: str, text: str = TEXT, seed: int = 0) -> tuple[str, tuple]:
    """A document id whose draw puts `text` in `mode` with all three parts non-empty."""
    for k in range(10_000):
        d = draw_fim(f"doc-{k}", len(text), FimConfig(), seed)
        if d.apply and (d.spm == (mode == "spm")) and 0 < d.lo < d.hi < len(text):
            return f"doc-{k}", d
    raise AssertionError("no such document id")


@pytest.mark.parametrize("which", ["tok", "llama_tok"])
def test_psm_layout(which, request):
    t = request.getfixturevalue(which)
    doc_id, d = _doc_with("psm")
    prefix, middle, suffix = TEXT[: d.lo], TEXT[d.lo : d.hi], TEXT[d.hi :]
    ids, mode = fim_transform(TEXT, doc_id, t, FimConfig(), 0)
    expected = (
        [t.pre_id] + t.encode(prefix)
        + [t.suf_id] + t.encode_no_prefix(suffix)
        + [t.mid_id] + t.encode_no_prefix(middle)
        + [t.eot_id]
    )
    assert mode == "psm"
    assert ids.tolist() == expected


@pytest.mark.parametrize("which", ["tok", "llama_tok"])
def test_spm_layout(which, request):
    t = request.getfixturevalue(which)
    doc_id, d = _doc_with("spm")
    prefix, middle, suffix = TEXT[: d.lo], TEXT[d.lo : d.hi], TEXT[d.hi :]
    ids, mode = fim_transform(TEXT, doc_id, t, FimConfig(), 0)
    expected = (
        [t.pre_id, t.suf_id] + t.encode_no_prefix(suffix)
        + [t.mid_id] + t.encode(prefix + middle)
        + [t.eot_id]
    )
    assert mode == "spm"
    assert ids.tolist() == expected


def test_spm_encodes_prefix_and_middle_together(tok):
    # Over many split points, joint encoding differs from encoding the parts somewhere:
    # the layout test above would catch an implementation that encodes them apart.
    differs = 0
    for k in range(200):
        d = draw_fim(f"d{k}", len(TEXT), FimConfig(rate=1.0, spm_rate=1.0), 0)
        ids, _ = fim_transform(TEXT, f"d{k}", tok, FimConfig(rate=1.0, spm_rate=1.0), 0)
        joint = ids.tolist()[ids.tolist().index(tok.mid_id) + 1 : -1]
        differs += joint != tok.encode(TEXT[: d.lo]) + tok.encode(TEXT[d.lo : d.hi])
    assert differs > 0


def test_realised_rates_and_uniform_split_points(tok):
    n = 4000
    texts = [f"x_{k} = {k}\n" * (1 + k % 7) for k in range(n)]
    ids = [f"doc-{k}" for k in range(n)]
    modes = encode_documents(texts, ids, tok, FimConfig(), seed=1).modes
    transformed = np.count_nonzero(modes)
    assert 0.88 < transformed / n < 0.92
    assert 0.46 < np.count_nonzero(modes == 2) / transformed < 0.54
    draws = [draw_fim(i, 1000, FimConfig(), 1) for i in ids]
    # lo = min and hi = max of two independent uniforms: means 1/3 and 2/3.
    assert abs(np.mean([d.lo for d in draws]) / 1000 - 1 / 3) < 0.02
    assert abs(np.mean([d.hi for d in draws]) / 1000 - 2 / 3) < 0.02
    assert min(d.lo for d in draws) >= 0 and max(d.hi for d in draws) <= 1000


@pytest.mark.parametrize("which", ["tok", "llama_tok"])
def test_undo_fim_recovers_documents(which, request, held_out):
    t = request.getfixturevalue(which)
    texts = held_out + EDGE_STRINGS + [TEXT] * 50
    if which == "llama_tok":
        # Its markers are user-defined pieces, which text can spell (" <PRE>"): known, documented.
        texts = [x for x in texts if "<PRE>" not in x]
    doc_ids = [f"doc-{k}" for k in range(len(texts))]
    enc = encode_documents(texts, doc_ids, t, FimConfig(), seed=3)
    assert set(enc.modes.tolist()) == {0, 1, 2}
    for text, ids, mode in zip(texts, enc.ids, enc.modes):
        assert undo_fim(ids, t, MODES[mode]) == text
        with_boundaries = [t.bos_id, *ids.tolist(), t.eos_id]
        assert undo_fim(with_boundaries, t, MODES[mode]) == text


def test_fim_is_a_function_of_seed_and_document_id(tok, held_out):
    doc_ids = [f"doc-{k}" for k in range(len(held_out))]
    forward = encode_documents(held_out, doc_ids, tok, FimConfig(), seed=7)
    backward = encode_documents(held_out[::-1], doc_ids[::-1], tok, FimConfig(), seed=7)
    for k, (text, doc_id) in enumerate(zip(held_out, doc_ids)):
        alone, mode = fim_transform(text, doc_id, tok, FimConfig(), seed=7)
        assert forward.ids[k].tolist() == backward.ids[-1 - k].tolist() == alone.tolist()
        assert MODES[forward.modes[k]] == mode
    other_seed = encode_documents(held_out, doc_ids, tok, FimConfig(), seed=8)
    assert any(a.tolist() != b.tolist() for a, b in zip(forward.ids, other_seed.ids))


def test_no_fim_for_documents_longer_than_a_context(tok):
    doc_id, _ = _doc_with("psm")
    plain = tok.encode(TEXT)
    ids, mode = fim_transform(TEXT, doc_id, tok, FimConfig(), 0, max_tokens=len(plain))
    assert (mode, ids.tolist()) == ("none", plain)  # the 4 FIM tokens no longer fit
    ids, mode = fim_transform(TEXT, doc_id, tok, FimConfig(), 0, max_tokens=len(plain) + 8)
    assert mode == "psm" and len(ids) <= len(plain) + 8
    # Many characters per token (16 spaces are one piece): encoded plainly first, then
    # still transformed when the FIM form fits.
    long_text = " " * 8000 + "x"
    doc_id, _ = _doc_with("spm", long_text)
    n = len(tok.encode(long_text))
    assert n < 8000 / 4 / 2
    assert fim_transform(long_text, doc_id, tok, FimConfig(), 0, max_tokens=n + 20)[1] == "spm"
    assert fim_transform(long_text, doc_id, tok, FimConfig(), 0, max_tokens=n + 3)[1] == "none"


def test_render_shows_markers(tok):
    doc_id, _ = _doc_with("psm")
    ids, _ = fim_transform(TEXT, doc_id, tok, FimConfig(), 0)
    shown = render([tok.bos_id, *ids.tolist(), tok.eos_id], tok)
    assert shown.startswith("<s><PRE>def add") and shown.endswith("<EOT></s>")
    assert shown.count("<SUF>") == shown.count("<MID>") == 1


# --- packing -------------------------------------------------------------------------


def _arr(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int32)


def test_packer_rows_doc_starts_and_long_documents():
    stats = PackStats()
    packer = SequencePacker(seq_len=8, bos_id=1, eos_id=2, pad_id=0, stats=stats)
    rows = packer.add([_arr(10, 11, 12), _arr(*[20] * 10), _arr()])
    assert rows.to_pydict() == {
        "input_ids": [[1, 10, 11, 12, 2, 1, 20, 20], [20, 20, 20, 20, 20, 20, 20, 20]],
        "doc_starts": [[0, 5], []],  # the second row continues the long document
        "num_tokens": [8, 8],
    }
    assert packer.add([_arr(30, 31)]) is None  # tail "</s> <s></s> <s> 30 31 </s>": 7 tokens
    last = packer.finish()
    assert last.to_pydict() == {
        "input_ids": [[2, 1, 2, 1, 30, 31, 2, 0]],
        "doc_starts": [[1, 3]],
        "num_tokens": [7],
    }
    assert stats.docs_long == 1
    assert (stats.sequences, stats.tokens, stats.pad_tokens) == (3, 23, 1)


def test_packer_drop_remainder_counts_tokens():
    stats = PackStats()
    packer = SequencePacker(seq_len=4, bos_id=1, eos_id=2, pad_id=0, remainder="drop", stats=stats)
    assert packer.add([_arr(5, 6, 7)]).num_rows == 1
    assert packer.finish() is None
    assert (stats.sequences, stats.tokens, stats.dropped_tokens) == (1, 4, 1)


def test_pack_documents_reconstructs_every_document(tok, held_out):
    texts = held_out + ["", "   \n\t", "tiny"]
    doc_ids = [f"doc-{k}" for k in range(len(texts))]
    stats = PackStats()
    pack = PackConfig(seq_len=256, packing="greedy")
    batches = [(texts[i : i + 7], doc_ids[i : i + 7]) for i in range(0, len(texts), 7)]
    rows = pa.Table.from_batches(list(pack_documents(batches, tok, FimConfig(), pack, 0, stats)))
    ids = np.stack(rows.column("input_ids").to_numpy(zero_copy_only=False))
    assert ids.shape == (stats.sequences, 256) and ids.dtype == np.int32
    num_tokens = rows.column("num_tokens").to_numpy()
    # rows are full but where a FIM document moved to the next row, and the last
    real = np.concatenate([ids[r, : num_tokens[r]] for r in range(len(ids))])
    stream = real

    # doc_starts lists exactly the BOS positions of each row.
    for r, starts in enumerate(rows.column("doc_starts").to_pylist()):
        assert starts == np.flatnonzero(ids[r, : num_tokens[r]] == tok.bos_id).tolist()

    docs = np.split(stream, np.flatnonzero(stream == tok.bos_id)[1:])
    kept = [t for t in texts if t and not t.isspace()]
    assert len(docs) == len(kept) == stats.docs_packed
    modes = []
    row_of = np.repeat(np.arange(len(ids)), num_tokens)  # the row of each real token
    at = 0
    for doc, text in zip(docs, kept):
        assert doc[0] == tok.bos_id and doc[-1] == tok.eos_id
        assert undo_fim(doc, tok) == text
        modes.append("spm" if doc[2] == tok.suf_id else "psm" if doc[1] == tok.pre_id else "none")
        if len(doc) > 256:
            assert modes[-1] == "none"
        if modes[-1] != "none":  # a FIM document is never cut across rows
            assert row_of[at] == row_of[at + len(doc) - 1]
        at += len(doc)
    assert stats.docs_in == len(texts) and stats.docs_empty == 2
    assert stats.docs_long == sum(len(d) > 256 for d in docs) > 0
    assert (stats.docs_psm, stats.docs_spm) == (modes.count("psm"), modes.count("spm")) != (0, 0)
    assert stats.tokens == sum(len(d) for d in docs)
    assert stats.docs_cut >= stats.docs_long


def test_best_fit_never_cuts_a_document_that_fits(tok, held_out):
    texts = held_out + ["tiny", "x = 1"]
    doc_ids = [f"doc-{k}" for k in range(len(texts))]
    pack = PackConfig(seq_len=256, best_fit_window=3)  # several windows
    batches = [(texts[i : i + 5], doc_ids[i : i + 5]) for i in range(0, len(texts), 5)]

    def packed() -> tuple[pa.Table, PackStats]:
        stats = PackStats()
        return pa.Table.from_batches(list(pack_documents(batches, tok, FimConfig(), pack, 0, stats))), stats

    rows, stats = packed()
    assert rows.equals(packed()[0])  # deterministic
    ids = np.stack(rows.column("input_ids").to_numpy(zero_copy_only=False))
    num_tokens = rows.column("num_tokens").to_numpy()
    starts = rows.column("doc_starts").to_pylist()
    whole = []
    for r in range(len(ids)):
        real = ids[r, : num_tokens[r]]
        assert starts[r] == np.flatnonzero(real == tok.bos_id).tolist()
        # a long document's remainder opens its row: no piece runs on from another document
        assert all(real[e + 1] == tok.bos_id for e in np.flatnonzero(real[:-1] == tok.eos_id))
        bounds = [*starts[r], len(real)]
        for a, b in zip(bounds, bounds[1:]):
            if real[b - 1] == tok.eos_id:
                whole.append(real[a:b])
    fits = [t for t, d in zip(texts, doc_ids) if len(fim_transform(t, d, tok, FimConfig(), 0, 254)[0]) + 2 <= 256]
    assert sorted(undo_fim(d, tok) for d in whole) == sorted(fits)  # each whole, exactly once
    assert stats.docs_cut == stats.docs_long == len(texts) - len(fits) > 0
    assert stats.tokens == int(num_tokens.sum()) and stats.pad_tokens == 256 * len(ids) - stats.tokens
    assert stats.docs_psm + stats.docs_spm > 0


# --- shards --------------------------------------------------------------------------


@pytest.fixture
def shard_dir(tok, held_out, tmp_path):
    stats = PackStats()
    pack = PackConfig(seq_len=128)
    texts = [TEXT] * 20 + held_out  # short documents fit a context and get FIM
    doc_ids = [f"doc-{k}" for k in range(len(texts))]
    with ShardWriter(tmp_path, pack.seq_len, rows_per_batch=64, batches_per_shard=4) as writer:
        for rows in pack_documents([(texts, doc_ids)], tok, FimConfig(), pack, 0, stats):
            writer.write(rows)
    write_manifest(
        tmp_path, tokenizer=tok, pack=pack, fim=FimConfig(), seed=0, shards=writer.shards, stats=stats,
        mix={"requested": {"stdlib": 1.0}, "realised": {"stdlib": 1.0}, "epochs": {"stdlib": 1.0}},
    )
    return tmp_path


def test_shards_manifest_and_checksums(shard_dir, tok):
    m = read_manifest(shard_dir)
    assert len(m["shards"]) > 1
    assert [s["file"] for s in m["shards"]] == [f"shard-{i:05d}.arrow" for i in range(len(m["shards"]))]
    assert all(s["rows"] == 256 for s in m["shards"][:-1])
    assert m["tokenizer"]["sha256"] == tok.sha256 and m["tokenizer"]["vocab_size"] == 3000
    assert m["tokenizer"]["special_ids"]["pre"] == tok.pre_id
    assert m["fim"] == {"rate": 0.9, "spm_rate": 0.5, "seed": 0} and m["seq_len"] == 128
    assert m["counts"]["sequences"] == sum(s["rows"] for s in m["shards"])
    assert m["mix"]["realised"] == {"stdlib": 1.0}
    assert verify_shards(shard_dir) == []
    assert load_tokenizer(shard_dir / "tokenizer.model").sha256 == tok.sha256


def test_fim_layout_finds_every_fim_document_and_any_cut_one(shard_dir, tok, tmp_path):
    counts = read_manifest(shard_dir)["counts"]
    assert fim_layout(shard_dir) == (counts["docs_psm"] + counts["docs_spm"], 0) != (0, 0)
    # A FIM document packed without being kept whole straddles the boundary: the checker sees it.
    fim_doc = np.array([tok.pre_id, 5, 6, tok.suf_id, 7, tok.mid_id, 8, tok.eot_id], dtype=np.int32)
    packer = SequencePacker(8, tok.bos_id, tok.eos_id, tok.eos_id)
    out = tmp_path / "cut"
    with ShardWriter(out, 8, rows_per_batch=4, batches_per_shard=4) as writer:
        for rows in (packer.add([np.array([9, 9], dtype=np.int32), fim_doc]), packer.finish()):
            writer.write(rows)
    write_manifest(out, tokenizer=tok, pack=PackConfig(seq_len=16), fim=FimConfig(), seed=0,
                   shards=writer.shards, stats=packer.stats, mix={})
    assert fim_layout(out) == (1, 1)


def test_corrupted_or_stray_shards_are_detected(shard_dir):
    victim = shard_dir / "shard-00001.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    (shard_dir / ".shard-00009.arrow.tmp-123").write_bytes(b"partial")
    problems = verify_shards(shard_dir)
    assert any("shard-00001.arrow: sha256 differs" in p for p in problems)
    assert any("shard-00009.arrow.tmp-123: not in the manifest" in p for p in problems)
    assert "checksums: 2 problem(s)" in inspect_shards(shard_dir)
    (shard_dir / MANIFEST).unlink()
    assert "manifest.json does not exist" in verify_shards(shard_dir)[0]


def test_hugging_face_datasets_opens_a_shard(shard_dir):
    path = shard_dir / "shard-00000.arrow"
    ds = datasets.Dataset.from_file(str(path))
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    assert ds.num_rows == table.num_rows == 256
    assert ds[3]["input_ids"] == table.column("input_ids")[3].as_py()
    ds.set_format("numpy")
    assert ds[:5]["input_ids"].shape == (5, 128)


def test_inspect_shows_manifest_and_a_decoded_sample(shard_dir, tok):
    paths = sorted(shard_dir.glob("shard-*.arrow"))
    rows = pa.concat_tables(pa.ipc.open_stream(pa.memory_map(str(p))).read_all() for p in paths)
    ids, starts = rows.column("input_ids").to_pylist(), rows.column("doc_starts").to_pylist()
    # A sequence in which a FIM document starts.
    sample = next(
        r
        for r in range(len(ids))
        if any(s + 1 < len(ids[r]) and ids[r][s + 1] == tok.pre_id for s in starts[r])
    )
    report = inspect_shards(shard_dir, sample)
    assert "checksums: OK" in report and "seq_len 128" in report
    assert "stdlib" in report and "100.0%" in report
    assert "<s><PRE>" in report and "<MID>" in report
    assert "no sequence 999999" in inspect_shards(shard_dir, 999999)


def _streamed_partition(tok, part: int, tamper: bool = False) -> list[dict]:
    """The rows one Spark partition sends the driver: its shards' chunks, then its counts."""
    from codemill.tokenize.jobs import PackedCounts, _Chunks

    sinks, rows = [], []

    def open_sink(name):
        sinks.append(_Chunks(name))
        return sinks[-1]

    packer = SequencePacker(16, tok.bos_id, tok.eos_id, tok.eos_id)
    with ShardWriter(None, 16, prefix=f"part-{part:05d}", rows_per_batch=1, batches_per_shard=1,
                     open_file=open_sink) as w:
        w.write(packer.add([np.arange(40, dtype=np.int32) + 100 * (part + 1)]))
    for sink in sinks:
        data = sink.take()
        rows.append({"file": sink.name, "data": data[:-1] + bytes([data[-1] ^ 1]) if tamper else data,
                     "shards": None, "stats": None})
    counts = PackedCounts(PackStats(sequences=sum(s.rows for s in w.shards)), {"code": 40})
    rows.append({"file": None, "data": None, "shards": json.dumps([vars(i) for i in w.shards]),
                 "stats": counts.to_json()})
    return rows


def test_streamed_shards_are_numbered_globally_and_checked(tok, tmp_path):
    from codemill.tokenize.jobs import _write_streamed

    out = Folder(tmp_path)
    infos, counts = _write_streamed(iter(_streamed_partition(tok, 0) + _streamed_partition(tok, 1)), out)
    assert [s.file for s in infos] == [f"shard-{i:05d}.arrow" for i in range(4)]
    assert sorted(p.name for p in tmp_path.glob("*.arrow")) == [s.file for s in infos]
    assert counts.pack.sequences == 4 and counts.category_tokens == {"code": 80}
    first = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "shard-00000.arrow"))).read_all()
    assert first.column("input_ids")[0].as_py()[1] == 100  # part 0's first token after <s>
    assert [hashlib.sha256((tmp_path / s.file).read_bytes()).hexdigest() for s in infos] == [
        s.sha256 for s in infos
    ]
    with pytest.raises(ShardError, match="differ from those packed"):
        _write_streamed(iter(_streamed_partition(tok, 0, tamper=True)), Folder(tmp_path / "bad"))


def test_partitions_write_local_shards_that_the_driver_numbers_in_partition_order(spark, tok, held_out,
                                                                                  tmp_path):
    from codemill.tokenize.jobs import PACKED_DIR, write_shards

    docs = spark.createDataFrame(
        [(f"doc-{k}", text, 0, "nl" if k % 2 else "code", len(text)) for k, text in enumerate(held_out * 3)],
        "id string, content string, copy int, category string, n_tokens long")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        (out / PACKED_DIR).mkdir(parents=True)  # a killed attempt's leftover
        (out / PACKED_DIR / ".part-00000-00000.arrow.tmp-1-dead").write_bytes(b"partial")
        infos, counts = write_shards(spark, docs, tok, FimConfig(), PackConfig(seq_len=256), 0, 3, Folder(out))
        assert [p.name for p in sorted(out.iterdir())] == [f"shard-{i:05d}.arrow" for i in range(len(infos))]
        assert sum(i.rows for i in infos) == counts.pack.sequences > 0
        assert counts.pack.docs_in == 3 * len(held_out)
        texts = held_out * 3
        assert counts.category_tokens == {"code": sum(len(t) for t in texts[0::2]),
                                          "nl": sum(len(t) for t in texts[1::2])}
        assert [hashlib.sha256((out / i.file).read_bytes()).hexdigest() for i in infos] == [i.sha256 for i in infos]
        runs.append([i.sha256 for i in infos])
    assert runs[0] == runs[1] and len(runs[0]) >= 3  # every partition wrote its shards


def test_large_packed_partitions_reach_the_driver_in_order_in_bounded_slices(spark):
    from pyspark.sql import functions as F

    from codemill.tokenize.jobs import CHUNK_DDL, streamable

    chunk = 1000
    rows = [(part, seq, f"part-{part:05d}-shard", bytes([seq % 256]) * chunk, None, None)
            for part in range(3) for seq in range(20)]
    rows += [(part, 20, None, None, "[]", "{}") for part in range(3)]  # each partition's counts
    packed = spark.createDataFrame(rows, CHUNK_DDL).repartition(3, "part").sortWithinPartitions("seq")
    sliced = streamable(packed, largest=20 * chunk, total=60 * chunk, slice_bytes=5 * chunk)
    order = [(r["part"], r["seq"]) for r in sliced.toLocalIterator()]
    assert order == sorted((r[0], r[1]) for r in rows)
    sizes = sliced.groupBy(F.spark_partition_id()).agg(F.sum(F.length("data")).alias("b")).collect()
    assert len(sizes) >= 10 and max(r["b"] or 0 for r in sizes) <= 6 * chunk
    assert streamable(packed, largest=20 * chunk, total=60 * chunk, slice_bytes=20 * chunk) is packed
