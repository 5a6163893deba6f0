"""One run per output root at a time.

A run holds `<out>/_LEASE.json` (run id, owner, host, pid, start, heartbeat) while it
works, refreshing the heartbeat from a background thread. A second run finds the lease
and refuses with who holds it. A lease whose holder died expires: at once when the
holder ran on this host and its process is gone, otherwise `ttl` seconds after its
last heartbeat. The lease is also what makes cleaning a stale attempt safe: while a
run holds it, no other live run writes under `out`.
"""

from __future__ import annotations

import atexit
import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from codemill.storage.base import FileSystem
from codemill.storage.uri import display, join

LEASE = "_LEASE.json"

log = logging.getLogger("codemill")

# This process's run: every lease it takes and every attempt it writes carry this id.
# Luigi's worker processes are forked from the run's process and inherit it.
RUN_ID = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class LeaseHeldError(RuntimeError):
    pass


@dataclass(frozen=True)
class Holder:
    run_id: str
    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float
    ttl: int

    def alive(self, now: float) -> bool:
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # another user's live process
        return now - self.heartbeat < self.ttl

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"run {self.run_id} of {self.owner} on host {self.host} (pid {self.pid}) since {since}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class Lease:
    def __init__(self, fs: FileSystem, out: str, ttl: int, run_id: str = RUN_ID) -> None:
        self.fs, self.out, self.ttl, self.run_id = fs, out, ttl, run_id
        self.uri = join(out, LEASE)
        self.started = time.time()
        self.pid = os.getpid()  # Luigi's forked workers inherit the lease but never release it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        holder = Holder(self.run_id, _user(), socket.gethostname(), os.getpid(), self.started,
                        time.time(), self.ttl)
        return (json.dumps(asdict(holder), sort_keys=True) + "\n").encode()

    def holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.fs.read_bytes(self.uri)))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError):
            if not self.fs.exists(self.uri):
                return None
            raise

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the live run that has it."""
        for _ in range(3):  # a lease that expires or is released while we look: look again
            if self.fs.create_new(self.uri, self._record()):
                break
            holder = self.holder()
            if holder is None:
                continue
            if holder.run_id == self.run_id:
                break
            if holder.alive(time.time()):
                raise LeaseHeldError(
                    f"{display(self.out)} is being written by {holder.describe()}; "
                    "use another out or wait for it to finish")
            self.fs.delete(self.uri)  # its holder died: the lease has expired
        else:
            raise LeaseHeldError(f"{display(self.out)}: could not take the lease {self.uri}")
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="codemill-lease", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl / 4)):
            holder = self.holder()
            if holder is None or holder.run_id != self.run_id:
                return  # taken over (we were presumed dead): never overwrite the new holder
            try:
                self.fs.write_bytes(self.uri, self._record())
            except Exception as exc:  # e.g. a full disk: the run's own error says so; try again
                log.warning(f"could not refresh the lease {display(self.uri)}: {exc}")

    def release(self) -> None:
        if os.getpid() != self.pid:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = self.holder()
        if holder is not None and holder.run_id == self.run_id:
            self.fs.delete(self.uri)


_HELD: dict[str, Lease] = {}


def hold(fs: FileSystem, out: str, ttl: int) -> Lease:
    """This process's lease on `out`, taken on first use and released at exit."""
    lease = _HELD.get(out)
    if lease is None:
        lease = Lease(fs, out, ttl)
        lease.acquire()
        _HELD[out] = lease
        if len(_HELD) == 1:
            atexit.register(release_all)
    return lease


def release(out: str) -> None:
    lease = _HELD.pop(out, None)
    if lease is not None:
        lease.release()


def release_all() -> None:
    for out in list(_HELD):
        release(out)
