"""Document kinds for the mixes: extension, source, file name, fastText classifier."""

from __future__ import annotations

import shutil

import fasttext
import pytest

from codemill.config import load_run_config
from codemill.errors import ConfigError, InputError
from codemill.ingest.config import IngestConfig, SourceConfig
from codemill.ingest.stage import ingest
from codemill.mix.config import KindConfig
from codemill.mix.kinds import assign_kinds, check_classifier_model, decide_kinds
from codemill.stages import make_stage


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


def test_trained_classifier_is_small_and_retrains_to_the_same_bytes(spark, docs, tmp_path):
    first = decide_kinds(spark, docs, KindConfig(), seed=0, work_dir=tmp_path / "a")
    second = decide_kinds(spark, docs, KindConfig(), seed=0, work_dir=tmp_path / "b")
    model = tmp_path / "a" / "kind-classifier.ftz"
    assert model.read_bytes() == (tmp_path / "b" / "kind-classifier.ftz").read_bytes()
    assert model.stat().st_size < 1_000_000
    assert kinds_by_path(first.kept) == kinds_by_path(second.kept)


def test_unquantised_classifier_is_a_bin_file(spark, docs, tmp_path):
    decide_kinds(spark, docs, KindConfig(classifier_quantize=False), seed=0, work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["kind-classifier.bin"]


def test_classifier_settings_are_checked_and_fingerprinted():
    with pytest.raises(ConfigError, match="kinds.classifier_buckets: 10 is out of range"):
        load_run_config(None, ["kinds.classifier_buckets=10"])
    settings = [make_stage(load_run_config(None, overrides), "kinds").settings()
                for overrides in ([], ["kinds.classifier_dim=32"], ["kinds.classifier_quantize=false"])]
    assert settings[0] != settings[1] and settings[0] != settings[2]


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
