from pathlib import Path

import pytest

from codemill.config import ConfigError, fingerprint, load_config


def test_embedded_demo_reads_this_machines_code():
    cfg = load_config()
    assert [s.name for s in cfg.sources] == ["stdlib", "site-packages"]
    assert all(s.resolved_path().is_dir() for s in cfg.sources)
    assert cfg.spark.master == "local[*]"
    assert cfg.near_dedup.ngram == 5 and cfg.near_dedup.num_perm == 256
    assert cfg.near_dedup.threshold == 0.7


def test_overrides_are_typed(tmp_path: Path):
    cfg = load_config(None, ["ingest.max_file_bytes=2000", 'spark.master="local[1]"', "out=/tmp/x"])
    assert cfg.ingest.max_file_bytes == 2000
    assert cfg.spark.master == "local[1]"
    assert cfg.out == "/tmp/x"


def test_unknown_key_names_file_and_key(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[ingest]\nmax_file_bytez = 3\n')
    with pytest.raises(ConfigError, match=r"run\.toml.*max_file_bytez"):
        load_config(path)


def test_wrong_type_and_bad_literal(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[ingest]\nmax_file_bytes = "big"\n')
    with pytest.raises(ConfigError, match="max_file_bytes"):
        load_config(path)
    path.write_text('[ingest]\ninvalid_utf8 = "ignore"\n')
    with pytest.raises(ConfigError, match="invalid_utf8"):
        load_config(path)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_unknown_column_mapping(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[[sources]]\nname="a"\ntype="jsonl"\npath="x"\ncolumns={text="content"}\n')
    with pytest.raises(ConfigError, match="unknown columns"):
        load_config(path)


def test_fingerprint_tracks_parameters():
    a, b = load_config(), load_config(None, ["exact_dedup.normalize_whitespace=true"])
    assert fingerprint(a.exact_dedup) != fingerprint(b.exact_dedup)
    assert fingerprint(a.ingest) == fingerprint(b.ingest)


def test_filter_settings_are_checked_before_spark(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text("[filters.rules]\nmax_line_lenght = 500\n")
    with pytest.raises(ConfigError, match="max_line_lenght"):
        load_config(path)
    path.write_text('[langid]\nenabled = true\nmodel_path = "/nowhere/lid.176.bin"\n')
    with pytest.raises(ConfigError, match="langid.model_path: /nowhere/lid.176.bin"):
        load_config(path)
    path.write_text('[[decontam.benchmarks]]\nname = "mbpp"\npath = "/nowhere/mbpp.jsonl"\n')
    with pytest.raises(ConfigError, match="mbpp.jsonl does not exist"):
        load_config(path)
