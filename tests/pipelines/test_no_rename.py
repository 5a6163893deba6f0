"""Commits never rename a directory: the whole DAG runs with directory renames
forbidden, as on an object store (Spark's own writers, in the JVM, commit their part
files through the Hadoop committer the cluster configures)."""

from __future__ import annotations

import os

from codemill.pipelines.task import stage_task

from support import run_dag, write_config


def test_the_dag_commits_without_renaming_a_directory(spark, real_tree, tmp_path, monkeypatch):
    renamed_files = []

    def forbid_directories(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.isdir(src):
                raise OSError(f"this file system cannot rename directories ({src} -> {dst})")
            renamed_files.append(os.fspath(dst))
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(os, "rename", forbid_directories(os.rename))
    monkeypatch.setattr(os, "replace", forbid_directories(os.replace))
    config = write_config(tmp_path / "run.toml", real_tree, tmp_path / "out")
    assert run_dag(config)
    assert stage_task("report", config).complete()
    assert renamed_files  # local files are still written under a temporary name and renamed
