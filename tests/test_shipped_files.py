"""Files shipped to executors: each driver's copies live in their own folder, which goes
when the run's process exits, or, after a killed run, when the next run starts shipping;
a run never removes the copies of another run that is still going."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from codemill.spark import ship_file

from support import wait_for

# A run in miniature: start Spark, ship a file, read it on an executor, then on "use"
# read it again, until stdin closes (a normal exit).
RUN = r"""
import json, sys
from pathlib import Path
from codemill.config.run import SparkConfig
from codemill.spark import get_spark, ship_file

spark = get_spark(SparkConfig(master="local[1]", conf={"spark.ui.enabled": "false"}))
copy = ship_file(spark, Path(sys.argv[1]))
name = copy.name

def read_on_executor():
    from pyspark import SparkFiles
    rdd = spark.sparkContext.parallelize([0], 1)
    return rdd.map(lambda _: open(SparkFiles.get(name)).read()).collect()[0]

print(json.dumps({"copy": str(copy), "content": read_on_executor()}), flush=True)
for line in sys.stdin:
    print(json.dumps({"content": read_on_executor()}), flush=True)
"""

pytestmark = pytest.mark.spark


class Run:
    """A process running RUN with its own temporary folder `tmp`."""

    def __init__(self, source: Path, tmp: Path) -> None:
        env = {**os.environ, "TMPDIR": str(tmp)}
        self.proc = subprocess.Popen([sys.executable, "-c", RUN, str(source)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started = self.reply()
        self.copy = Path(started["copy"])
        self.content = started["content"]

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the run exited with {self.proc.wait()}"
        return json.loads(line)

    def use(self) -> str:
        self.proc.stdin.write("use\n")
        self.proc.stdin.flush()
        return self.reply()["content"]

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait() == 0

    def driver_pid(self) -> int:
        return int(self.copy.parent.name.rsplit("-", 1)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_each_run_ships_into_its_own_folder_removed_at_exit(tmp_path):
    source = tmp_path / "model.bin"
    source.write_text("weights")
    first = Run(source, tmp_path)
    second = Run(source, tmp_path)  # starts while the first is running: its clean-up runs
    try:
        assert first.copy.parent != second.copy.parent
        assert first.copy.exists() and second.copy.exists()
        assert first.use() == "weights"  # still served after the second run started
        first.finish()
        assert not first.copy.parent.exists()
        assert second.copy.exists() and second.use() == "weights"
    finally:
        for run in (first, second):
            run.proc.kill()
            run.proc.wait()


def test_a_killed_runs_folder_is_removed_by_the_next_run(tmp_path):
    source = tmp_path / "model.bin"
    source.write_text("weights")
    killed = Run(source, tmp_path)
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait()
    # its JVM follows once it sees its parent's pipe close
    wait_for(lambda: not alive(killed.driver_pid()), 60, "the killed run's JVM to exit")
    assert killed.copy.exists()  # nothing ran at its exit
    nxt = Run(source, tmp_path)
    try:
        assert not killed.copy.parent.exists()
        assert nxt.content == "weights"
        nxt.finish()
        assert list((tmp_path / "codemill-shipped").iterdir()) == []
    finally:
        nxt.proc.kill()
        nxt.proc.wait()


def test_copies_are_named_by_content(spark, tmp_path):
    a, b = tmp_path / "a" / "tokenizer.model", tmp_path / "b" / "tokenizer.model"
    for path, text in ((a, "one"), (b, "two")):
        path.parent.mkdir()
        path.write_text(text)
    copy_a, copy_b = ship_file(spark, a), ship_file(spark, b)
    assert copy_a.parent == copy_b.parent and copy_a.name != copy_b.name
    assert copy_a.read_text() == "one" and copy_b.read_text() == "two"
    assert ship_file(spark, a) == copy_a
