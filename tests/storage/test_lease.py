"""One run per output root: the lease on `out`."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from codemill.storage import filesystem, to_uri
from codemill.storage.lease import LEASE, Lease, LeaseHeldError


@pytest.fixture
def out(tmp_path) -> str:
    return to_uri(tmp_path / "out")


def write_holder(out: str, **fields) -> None:
    holder = dict(run_id="20261130T000000Z-other", owner="someone", host=socket.gethostname(),
                  pid=1, started=time.time() - 60, heartbeat=time.time(), ttl=120)
    holder.update(fields)
    filesystem(out).write_text(f"{out}/{LEASE}", json.dumps(holder))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_second_run_is_refused_with_who_holds_the_lease(out):
    first = Lease(filesystem(out), out, ttl=120, run_id="run-a")
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError) as refused:
            Lease(filesystem(out), out, ttl=120, run_id="run-b").acquire()
        message = str(refused.value)
        assert "is being written by run run-a" in message and socket.gethostname() in message
        assert "use another out or wait" in message and "\n" not in message
        first.acquire()  # the holder itself may take it again
    finally:
        first.release()
    assert not filesystem(out).exists(f"{out}/{LEASE}")
    Lease(filesystem(out), out, ttl=120, run_id="run-b").acquire()


def test_a_crashed_runs_lease_expires(out):
    write_holder(out, pid=dead_pid())  # this host, its process gone: expired at once
    taker = Lease(filesystem(out), out, ttl=120, run_id="run-c")
    taker.acquire()
    assert taker.holder().run_id == "run-c"
    taker.release()

    write_holder(out, host="elsewhere", heartbeat=time.time() - 600)  # silent for longer than ttl
    Lease(filesystem(out), out, ttl=120, run_id="run-d").acquire()


def test_a_live_lease_on_another_host_holds(out):
    write_holder(out, host="elsewhere", heartbeat=time.time())
    with pytest.raises(LeaseHeldError, match="on host elsewhere"):
        Lease(filesystem(out), out, ttl=120, run_id="run-e").acquire()


def test_the_heartbeat_never_overwrites_a_new_holder(out):
    lease = Lease(filesystem(out), out, ttl=120, run_id="run-f")
    lease.acquire()
    write_holder(out, run_id="run-g", pid=dead_pid())  # presumed dead, taken over
    lease._stop.set()
    lease.release()  # not ours any more: left as it is
    assert json.loads(filesystem(out).read_text(f"{out}/{LEASE}"))["run_id"] == "run-g"
