"""Document kinds for the mixes: extension, source, file name, fastText classifier."""

from __future__ import annotations

import shutil

import fasttext
import pytest

from codemill.errors import InputError
from codemill.ingest.config import IngestConfig, SourceConfig
from codemill.ingest.stage import ingest
from codemill.mix.config import KindConfig
from codemill.mix.kinds import assign_kinds, check_classifier_model, decide_kinds


@pytest.fixture(scope="module")
def docs(spark, real_tree, tmp_path_factory):
    tree = tmp_path_factory.mktemp("kinds")
    shutil.copytree(real_tree, tree, dirs_exist_ok=True)
    # plain-text files whose kind only their content tells
    (tree / "notes.txt").write_text((real_tree / "py" / "json" / "decoder.py").read_text())
    (tree / "guide.txt").write_text((real_tree / "docs" / "luigi" / "METADATA").read_text())
    out = ingest(spark, [SourceConfig(name="t", type="dir", path=str(tree))], IngestConfig())
    frame = out.kept.localCheckpoint()
    spark.catalog.clearCache()
    return frame


def kinds_by_path(frame) -> dict[str, tuple[str, str]]:
    return {r["path"]: (r["kind"], r["kind_source"]) for r in frame.collect()}


def test_trained_classifier_decides_plain_text(spark, docs, tmp_path):
    out = decide_kinds(spark, docs, KindConfig(), seed=0, work_dir=tmp_path)
    got = kinds_by_path(out.kept)
    assert out.extra["classifier"] == "trained"
    assert got["py/json/decoder.py"] == ("code", "extension")
    assert got["docs/luigi/METADATA"] == ("nl_code", "extension")
    assert got["LICENSE.txt"] == ("nl", "filename")
    assert got["notes.txt"] == ("code", "classifier")
    assert got["guide.txt"] == ("nl_code", "classifier")
    assert out.kept.count() == docs.count()


def test_source_kind_wins(spark, docs):
    got = kinds_by_path(assign_kinds(spark, docs, KindConfig(source_kinds={"t": "nl"}), None))
    assert set(got.values()) == {("nl", "source")}


def test_user_model_is_checked(tmp_path):
    data = tmp_path / "train.txt"
    data.write_text("__label__en hello world\n__label__fr bonjour le monde\n" * 20)
    model = fasttext.train_supervised(str(data), epoch=1, thread=1, verbose=0)
    model.save_model(str(tmp_path / "lid.bin"))
    with pytest.raises(InputError, match="are not among"):
        check_classifier_model(str(tmp_path / "lid.bin"))
    with pytest.raises(InputError, match="does not exist"):
        check_classifier_model(str(tmp_path / "missing.bin"))
