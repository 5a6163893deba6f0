"""The run config: typed, range-checked before Spark starts, errors naming key and source."""

from pathlib import Path

import pytest

from codemill.config import load_run_config
from codemill.config.loader import expand_path
from codemill.errors import ConfigError
from codemill.fingerprint import fingerprint
from codemill.storage import local_path


def test_embedded_demo_reads_this_machines_code():
    cfg = load_run_config()
    assert [s.name for s in cfg.sources] == ["stdlib", "site-packages"]
    assert all(local_path(s.uri()).is_dir() for s in cfg.sources)
    assert cfg.spark.master == "local[*]"
    assert cfg.near_dedup.ngram == 5 and cfg.near_dedup.num_perm == 256
    assert cfg.near_dedup.threshold == 0.7


def test_overrides_are_typed(tmp_path: Path):
    cfg = load_run_config(None, ["ingest.max_file_bytes=2000", 'spark.master="local[1]"', "out=/tmp/x"])
    assert cfg.ingest.max_file_bytes == 2000
    assert cfg.spark.master == "local[1]"
    assert cfg.out == "/tmp/x"


# Each of these loaded before and then failed late, or finished with wrong output.
BAD_VALUES = [
    ("mix.max_epochs=0", "mix.max_epochs: 0.0 is out of range"),
    ("fim.rate=2.0", "fim.rate: 2.0 is out of range: must be in [0.0, 1.0]"),
    ("fim.spm_rate=-1", "fim.spm_rate: -1.0 is out of range"),
    ("pack.seq_len=0", "pack.seq_len: 0 is out of range"),
    ("near_dedup.threshold=1.5", "near_dedup.threshold: 1.5 is out of range: must be in (0.0, 1.0]"),
    ("near_dedup.num_perm=0", "near_dedup.num_perm: 0 is out of range"),
    ("tokenizer.vocab_size=0", "tokenizer.vocab_size: 0 is out of range"),
    ("ingest.files_per_partition=0", "ingest.files_per_partition: 0 is out of range"),
    ("ingest.split_bytes=0", "ingest.split_bytes: 0 is out of range"),
    ("mix.partitions=0", "mix.partitions: 0 is out of range"),
    ('pii.kinds=["credit_card"]', "pii.kinds[0]: 'credit_card' is not a PII kind; known kinds: "),
    ("near_dedup.bands=30", "near_dedup.bands: give both bands and rows"),
    ("luigi.workers=0", "luigi.workers: 0 is out of range"),
    ('spark.log_level="LOUD"', "spark.log_level: 'LOUD' is not one of ['ALL', 'DEBUG'"),
    ('ingest.invalid_utf8="ignore"', "ingest.invalid_utf8: 'ignore' is not one of ['replace', 'drop']"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES)
def test_bad_values_are_rejected_naming_the_key_and_the_set(override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    assert message in str(err.value)
    assert str(err.value).endswith(f"(from --set {override})")


def test_errors_in_the_file_name_the_file(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[fim]\nrate = 2.0\n')
    with pytest.raises(ConfigError, match=rf"fim.rate: 2.0 is out of range.*\(in {path}\)"):
        load_run_config(path)
    # an override elsewhere does not take the blame for the file's value
    with pytest.raises(ConfigError, match=rf"\(in {path}\)"):
        load_run_config(path, ["fim.spm_rate=0.4"])


def test_two_mixes_with_one_name(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[[mix.mixes]]\nname = "a"\nshares = { code = 1.0 }\n'
                    '[[mix.mixes]]\nname = "a"\nshares = { nl = 1.0 }\n')
    with pytest.raises(ConfigError, match=r"mix.mixes\[1\].name: two mixes are named 'a'"):
        load_run_config(path)


def test_unknown_key_names_section_and_suggests(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[ingest]\nmax_file_bytez = 3\n')
    with pytest.raises(ConfigError, match=r"ingest.max_file_bytez: unknown key; did you mean "
                                          r"'max_file_bytes'\? \(in .*run\.toml\)"):
        load_run_config(path)
    with pytest.raises(ConfigError, match=r"near_dedup.treshold: unknown key; did you mean "
                                          r"'threshold'\? \(from --set near_dedup.treshold=0.5\)"):
        load_run_config(None, ["near_dedup.treshold=0.5"])
    with pytest.raises(ConfigError, match=r"nosuchsection: unknown key; valid keys:"):
        load_run_config(None, ["nosuchsection.x=1"])


def test_wrong_type_and_bad_literal(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[ingest]\nmax_file_bytes = "big"\n')
    with pytest.raises(ConfigError, match="ingest.max_file_bytes: expected an integer, got 'big'"):
        load_run_config(path)
    path.write_text('[ingest]\ninvalid_utf8 = "ignore"\n')
    with pytest.raises(ConfigError, match="invalid_utf8"):
        load_run_config(path)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_run_config(tmp_path / "nope.toml")


def test_unknown_column_mapping(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[[sources]]\nname="a"\ntype="jsonl"\npath="x"\ncolumns={text="content"}\n')
    with pytest.raises(ConfigError, match=r"sources\[0\].columns.text: unknown column"):
        load_run_config(path)


def test_environment_variables_in_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CODEMILL_TEST_DATA", str(tmp_path))
    path = tmp_path / "run.toml"
    path.write_text('out = "${CODEMILL_TEST_DATA}/out"\n[[sources]]\nname="a"\ntype="dir"\n'
                    'path="$CODEMILL_TEST_DATA/src"\n')
    cfg = load_run_config(path)
    assert cfg.out == f"{tmp_path}/out" and cfg.sources[0].path == f"{tmp_path}/src"
    monkeypatch.delenv("CODEMILL_TEST_DATA")
    with pytest.raises(ConfigError, match=r"out: environment variable \$CODEMILL_TEST_DATA is not set"):
        load_run_config(path)
    assert expand_path("{stdlib}/json").endswith("/json") and "{" not in expand_path("{stdlib}")


def test_fingerprint_tracks_parameters():
    a, b = load_run_config(), load_run_config(None, ["exact_dedup.normalize_whitespace=true"])
    assert fingerprint(a.exact_dedup) != fingerprint(b.exact_dedup)
    assert fingerprint(a.ingest) == fingerprint(b.ingest)


def test_filter_settings_are_checked_before_spark(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text("[filters.rules]\nmax_line_lenght = 500\n")
    with pytest.raises(ConfigError, match="filters.rules.max_line_lenght: unknown filter rule"):
        load_run_config(path)
    path.write_text('[langid]\nenabled = true\nmodel_path = "/nowhere/lid.176.bin"\n')
    with pytest.raises(ConfigError, match="langid.model_path: /nowhere/lid.176.bin is not a file"):
        load_run_config(path)
    path.write_text('[[decontam.benchmarks]]\nname = "mbpp"\npath = "/nowhere/mbpp.jsonl"\n')
    with pytest.raises(ConfigError, match=r"decontam.benchmarks\[0\].path: .*mbpp.jsonl does not exist"):
        load_run_config(path)


def test_every_setting_is_honoured():
    """A stage that can be switched off is skipped by the DAG, not run as a no-op."""
    from codemill.stages import document_chain

    cfg = load_run_config(None, ["exact_dedup.enabled=false", "near_dedup.enabled=false"])
    assert document_chain(cfg) == ["ingest", "filters", "kinds"]
