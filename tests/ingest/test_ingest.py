"""Ingest on a real local SparkSession: real files, every kind of bad input."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.errors import PythonException

from codemill.errors import InputError, explain
from codemill.ingest.config import IngestConfig, SourceConfig
from codemill.ingest.stage import ingest
from codemill.schema import DOC_SCHEMA
from codemill.storage.folder import Folder

from support import STDLIB

RUNS = itertools.count()


WORK_ROOT: list[Path] = []


@pytest.fixture(autouse=True)
def work_root(tmp_path):
    WORK_ROOT[:] = [tmp_path / "work"]


def run(spark, sources, in_spark=False, **cfg):
    """Ingest as the pipeline runs it: the read tasks write both tables into a work
    folder (`in_spark`: the tables are built in Spark, as for a remote `out`)."""
    work = None if in_spark else Folder(str(WORK_ROOT[0] / str(next(RUNS))))
    out = ingest(spark, sources, IngestConfig(**cfg), work=work)
    kept = {r["path"]: r.asDict() for r in out.kept.collect()}
    dropped = {r["path"]: r.asDict() for r in out.dropped.collect()}
    spark.catalog.clearCache()
    return kept, dropped


@pytest.fixture(scope="module")
def messy_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    shutil.copy(STDLIB / "json" / "decoder.py", root / "decoder.py")
    shutil.copy(STDLIB / "LICENSE.txt", root / "LICENSE.txt")
    (root / "tool").write_text("#!/usr/bin/env python3\nprint('hi')\n")
    (root / "blob.py").write_bytes(b"import os\n\x00\x01\x02binary")
    (root / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (root / "empty.py").write_bytes(b"")
    (root / "blank.py").write_text("\n   \n\t\n")
    (root / "huge.py").write_text("x = 1\n" * 10_000)  # 60 kB > the limit below
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / "noext").write_text("just some words\n")
    os.symlink(root / "missing-target.py", root / "dangling.py")
    os.symlink("self.py", root / "self.py")
    (root / "sub").mkdir()
    shutil.copy(STDLIB / "json" / "scanner.py", root / "sub" / "scanner.py")
    os.symlink("..", root / "sub" / "loop")
    os.mkfifo(root / "pipe.py")
    # a file name in Latin-1, not UTF-8: listed, never fatal
    Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.py")).write_text("x = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    return root


def test_directory_source_sorts_every_file(spark, messy_tree):
    src = SourceConfig(name="messy", type="dir", path=str(messy_tree), license="MIT")
    kept, dropped = run(spark, [src], max_file_bytes=50_000)

    assert set(kept) == {"decoder.py", "LICENSE.txt", "tool", "latin1.py", "sub/scanner.py"}
    assert kept["decoder.py"]["lang"] == "python" and kept["decoder.py"]["kind"] == "code"
    assert kept["tool"]["lang"] == "python"  # shebang
    assert kept["LICENSE.txt"]["kind"] == "nl"
    assert kept["decoder.py"]["license"] == "MIT"
    assert kept["decoder.py"]["content"] == (STDLIB / "json" / "decoder.py").read_text()
    # invalid UTF-8 is decoded with replacement and flagged (the default policy)
    assert kept["latin1.py"]["invalid_utf8"] is True
    assert "\ufffd" in kept["latin1.py"]["content"]

    reasons = {path: row["reason"] for path, row in dropped.items()}
    assert reasons == {
        "blob.py": "binary",
        "empty.py": "empty",
        "blank.py": "empty",
        "huge.py": "too_large",
        "image.png": "unsupported_extension",
        "noext": "unknown_language",
        "dangling.py": "unreadable",
        "self.py": "symlink_loop",
        "sub/loop": "symlink_loop",
        "pipe.py": "not_regular_file",
        "caf\\xe9.py": "undecodable_path",
    }
    assert all(row["stage"] == "ingest" and row["content"] is None for row in dropped.values())


def test_invalid_utf8_drop_policy(spark, messy_tree):
    src = SourceConfig(name="messy", type="dir", path=str(messy_tree))
    kept, dropped = run(spark, [src], invalid_utf8="drop")
    assert "latin1.py" not in kept
    assert dropped["latin1.py"]["reason"] == "invalid_utf8"


def test_ids_are_stable_and_content_derived(spark, real_tree):
    src = SourceConfig(name="real", type="dir", path=str(real_tree))
    first, _ = run(spark, [src])
    second, _ = run(spark, [src], files_per_partition=7)  # other partitioning
    assert {p: r["id"] for p, r in first.items()} == {p: r["id"] for p, r in second.items()}
    assert len({r["id"] for r in first.values()}) == len(first)
    # same content at two paths: different ids, same sha256
    a, b = first["py/json/decoder.py"], first["vendored/decoder.py"]
    assert a["sha256"] == b["sha256"] and a["id"] != b["id"]


def _stack_records(n: int) -> list[dict]:
    files = sorted((STDLIB / "json").glob("*.py"))[:n]
    return [
        {"content": f.read_text(), "path": f"json/{f.name}", "lang": "Python",
         "repo_name": "cpython", "license": ["PSF-2.0"], "stars": 10 + i}
        for i, f in enumerate(files)
    ]


def test_jsonl_in_the_stack_schema(spark, tmp_path):
    records = _stack_records(4)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:2]) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[2:]))
    (tmp_path / "empty.jsonl").write_text("")
    src = SourceConfig(name="stack", type="jsonl", path=str(tmp_path))
    kept, dropped = run(spark, [src])
    assert set(kept) == {r["path"] for r in records} and not dropped
    row = kept["json/" + Path(records[0]["path"]).name]
    assert (row["lang"], row["repo"], row["license"], row["stars"]) == ("python", "cpython", "PSF-2.0", 10)


def test_jsonl_column_mapping_and_default_path(spark, tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "def f():\n    return 1\n", "language": "py"}) + "\n")
    src = SourceConfig(name="m", type="jsonl", path=str(tmp_path),
                       columns={"content": "text", "lang": "language"})
    kept, _ = run(spark, [src])
    assert list(kept) == ["x.jsonl:1"] and kept["x.jsonl:1"]["lang"] == "python"


def test_malformed_jsonl_line_names_file_and_line(spark, tmp_path):
    good = json.dumps(_stack_records(1)[0])
    (tmp_path / "bad.jsonl").write_text(f"{good}\n{good}\n{{not json\n{good}\n")
    src = SourceConfig(name="bad", type="jsonl", path=str(tmp_path))
    with pytest.raises(PythonException) as info:
        run(spark, [src])
    message = explain(info.value)
    assert f"{tmp_path / 'bad.jsonl'}:3: malformed JSONL record" in message


def test_malformed_jsonl_quarantine(spark, tmp_path):
    good = json.dumps(_stack_records(1)[0])
    (tmp_path / "bad.jsonl").write_text(f"{good}\n[1, 2]\n{{not json\n")
    src = SourceConfig(name="bad", type="jsonl", path=str(tmp_path))
    kept, dropped = run(spark, [src], malformed_jsonl="quarantine")
    assert len(kept) == 1
    assert {p: r["reason"] for p, r in dropped.items()} == {
        "bad.jsonl:2": "malformed_jsonl", "bad.jsonl:3": "malformed_jsonl"}
    assert dropped["bad.jsonl:3"]["content"] == "{not json\n"


def test_parquet_source(spark, tmp_path):
    records = _stack_records(3) + [{"content": None, "path": "gone.py", "lang": "Python",
                                    "repo_name": "r", "license": None, "stars": None}]
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "part-0.parquet")
    kept, dropped = run(spark, [SourceConfig(name="pq", type="parquet", path=str(tmp_path))])
    assert len(kept) == 3
    assert dropped["gone.py"]["reason"] == "missing_content"


def test_parquet_without_content_column(spark, tmp_path):
    pq.write_table(pa.table({"text": ["x = 1\n"]}), tmp_path / "p.parquet")
    with pytest.raises(InputError, match="no column 'content'"):
        run(spark, [SourceConfig(name="pq", type="parquet", path=str(tmp_path))])


def test_hugging_face_dataset_on_disk(spark, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_stack_records(3))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "hf"))
    kept, _ = run(spark, [SourceConfig(name="hf", type="hf_disk", path=str(tmp_path / "hf"))])
    assert len(kept) == 3  # the test split repeats a path and content: same id
    with pytest.raises(InputError, match="save_to_disk"):
        run(spark, [SourceConfig(name="hf", type="hf_disk", path=str(tmp_path))])


def mount_viewfs(spark, cluster: str, target: Path) -> str:
    """`viewfs://<cluster>/data` onto `target`, a non-local scheme over a local folder."""
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    conf.set(f"fs.viewfs.mounttable.{cluster}.link./data", f"file://{target}")
    return f"viewfs://{cluster}/data"


def test_remote_sources_read_like_local_ones(spark, tmp_path):
    tree = tmp_path / "tree"
    for rel, data in {"pkg/__init__.py": b"", "pkg/_private.py": b"x = 1\n", ".hidden.py": b"y = 2\n",
                      "odd [name]{1}.py": b"z = 3\n", "pkg/mod.py": b"def f():\n    return 1\n",
                      "pkg/_metadata.py": b"version = 1\n",
                      "image.png": b"\x89PNG", "blob.py": b"a\x00b", "__pycache__/m.pyc": b"\x00",
                      "latin1.py": "# caf\xe9\n".encode("latin-1")}.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    records = _stack_records(3)
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "a.jsonl").write_text(json.dumps(records[0]) + "\n{oops\n")
    with gzip.open(tmp_path / "jsonl" / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[1:]))
    import datasets

    datasets.Dataset.from_list(_stack_records(2)).save_to_disk(str(tmp_path / "hf"))
    remote = mount_viewfs(spark, "ingesttest", tmp_path)

    def sources(root: str) -> list[SourceConfig]:
        return [SourceConfig(name="tree", type="dir", path=f"{root}/tree"),
                SourceConfig(name="j", type="jsonl", path=f"{root}/jsonl"),
                SourceConfig(name="hf", type="hf_disk", path=f"{root}/hf")]

    local_kept, local_dropped = run(spark, sources(str(tmp_path)), malformed_jsonl="quarantine")
    remote_kept, remote_dropped = run(spark, sources(remote), malformed_jsonl="quarantine")
    assert {p: r["id"] for p, r in remote_kept.items()} == {p: r["id"] for p, r in local_kept.items()}
    assert {p: r["reason"] for p, r in remote_dropped.items()} == {p: r["reason"] for p, r in local_dropped.items()}
    # names Spark's scans pass over (Parquet summary files) are read all the same
    assert {"pkg/_private.py", ".hidden.py", "odd [name]{1}.py", "pkg/_metadata.py"} <= set(remote_kept)
    assert remote_dropped["pkg/__init__.py"]["reason"] == "empty"
    assert remote_dropped["a.jsonl:2"]["detail"].startswith(f"{remote}/jsonl/a.jsonl:2: malformed JSONL")


def test_a_truncated_gzip_file_is_named_with_its_last_good_line(spark, tmp_path):
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in _stack_records(4) * 50).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    src = SourceConfig(name="cut", type="jsonl", path=str(tmp_path))
    with pytest.raises(PythonException) as info:
        run(spark, [src])
    message = explain(info.value)
    assert message.startswith(f"{tmp_path / 'cut.jsonl.gz'}: truncated or damaged gzip file after line ")
    assert "Traceback" not in message


def test_records_without_the_content_field_name_the_mapping(spark, tmp_path):
    records = [{"text": r["content"], "path": r["path"]} for r in _stack_records(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    src = SourceConfig(name="texts", type="jsonl", path=str(tmp_path))
    with pytest.raises(InputError) as info:
        run(spark, [src])
    assert str(info.value) == (
        "source 'texts': none of its 3 records has a 'content' field (its first record has path, "
        'text); name the field that holds the text with [sources.columns] content = "<field>"')
    mapped = SourceConfig(name="texts", type="jsonl", path=str(tmp_path), columns={"content": "text"})
    kept, _ = run(spark, [mapped])
    assert len(kept) == 3


def test_an_empty_source_is_named(spark, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "code").mkdir()
    shutil.copy(STDLIB / "json" / "decoder.py", tmp_path / "code" / "decoder.py")
    sources = [SourceConfig(name="code", type="dir", path=str(tmp_path / "code")),
               SourceConfig(name="nothing", type="dir", path=str(tmp_path / "empty"))]
    with pytest.raises(InputError, match=f"source 'nothing': {tmp_path / 'empty'} holds no files; check its path"):
        run(spark, sources)


def test_tables_written_by_the_read_tasks_equal_those_built_in_spark(spark, messy_tree, tmp_path):
    records = _stack_records(4)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{oops\n")
    pq.write_table(pa.Table.from_pylist(records[:2] + [{"content": None, "path": "gone.py"}]),
                   tmp_path / "p.parquet", row_group_size=1)
    sources = [SourceConfig(name="tree", type="dir", path=str(messy_tree)),
               SourceConfig(name="j", type="jsonl", path=str(tmp_path / "j")),
               SourceConfig(name="p", type="parquet", path=str(tmp_path / "p.parquet"))]
    settings = dict(malformed_jsonl="quarantine", max_file_bytes=50_000, split_bytes=4096, files_per_partition=3)
    assert run(spark, sources, **settings) == run(spark, sources, in_spark=True, **settings)


def test_read_tasks_write_whole_parts_and_count_them(spark, real_tree, tmp_path):
    work = Folder(str(tmp_path / "attempt"))
    out = ingest(spark, [SourceConfig(name="real", type="dir", path=str(real_tree))],
                 IngestConfig(files_per_partition=5), work=work)
    parts = sorted(p.name for p in (tmp_path / "attempt" / "docs").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(len(parts))] and len(parts) > 1
    assert sorted(p.name for p in (tmp_path / "attempt" / "dropped").iterdir()) == parts  # no temporaries
    assert out.kept.schema.simpleString() == spark.createDataFrame([], DOC_SCHEMA).schema.simpleString()
    kept, dropped = out.kept.count(), out.dropped.count()
    assert out.counts[None][0] == kept and sum(n for r, (n, _) in out.counts.items() if r) == dropped
    assert out.counts[None][1] == out.kept.agg({"size_bytes": "sum"}).first()[0]
