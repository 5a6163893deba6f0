"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

from codemill.cli import main, make_parser

CODEMILL = [sys.executable, "-m", "codemill.cli"]


def test_help_lists_commands_and_examples():
    text = make_parser().format_help()
    assert "run" in text and "config" in text and "examples:" in text
    result = subprocess.run([*CODEMILL, "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--set", "--out", "--master", "--workers", "--scheduler"):
        assert flag in result.stdout


def test_config_command_applies_overrides(capsys):
    assert main(["config", "--master", "local[2]", "--set", "ingest.max_file_bytes=7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spark"]["master"] == "local[2]"
    assert shown["ingest"]["max_file_bytes"] == 7


def test_bad_scheduler_flag(capsys):
    assert main(["config", "--scheduler", "nohostport"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_flags_are_checked_like_the_file(capsys):
    # a zero is a value, not "flag absent"
    assert main(["config", "--workers", "0"]) == 2
    assert "luigi.workers: 0 is out of range" in capsys.readouterr().err
    assert main(["config", "--out", ""]) == 2
    assert "out: must not be empty" in capsys.readouterr().err
