"""Run model-written Python against its unit tests: isolated, hundreds per second.

How a candidate runs
--------------------
`Sandbox` starts one *worker* per core: a fresh interpreter (not a fork of the
caller, so none of the caller's memory or environment comes along) with a
scrubbed environment and common stdlib modules pre-imported. Each worker sets
up once: cgroups, nested under the caller's own, that cap the memory and
processes of each candidate's whole tree and give it an equal CPU share; a
private mount namespace whose root is a minimal tree of read-only binds (the
system's /usr and its kin, the interpreter's install and packages, the dynamic
loader's cache, /dev/null, zero, random and urandom) with a scratch tmpfs,
pivoted into so that the rest of the host (/proc, /sys, /run, /etc, /home,
Unix socket files, pseudo-terminals) is gone; and a network namespace of its
own (loopback down: no network at all), which its candidates share one after
another. A candidate cannot name a socket there (bind and listen are refused),
and every process of a candidate is gone before the next starts, so nothing
it made in that namespace can be found by the next.

Then the worker forks a *zygote* and only then starts taking jobs: the zygote
never receives a job or a result, so its memory holds nothing of any
candidate. Per candidate the worker makes a scratch directory, writes the
solution and the tests into two pipes and passes the candidate's pipes to the
zygote, which unshares fresh PID and IPC namespaces and forks the
candidate's first process as PID 1 of them.
That process starts its own session, joins the cgroups and forks the
*solution's process*; it then reads the tests and becomes the *tests'
process*, while the solution's process reads only the solution. Each locks
itself down before any job code runs: stdin from /dev/null, stdout/stderr on
pipes the worker drains (keeping a capped tail); rlimits (CPU seconds, address
space, processes, file size, open files, no core dumps); every other fd
closed; its scratch directory (removed afterwards; if that fails, say for a
tree too deep to walk, the scratch tmpfs is replaced whole); the worker's own
unprivileged uid/gid with no groups; not dumpable (its memory is closed to
/proc/pid/mem); no_new_privs (setuid binaries grant nothing); and a seccomp
filter that refuses new user namespaces, ptrace, keyrings, BPF, perf events,
userfaultfd and naming sockets (bind, listen); the filter and no_new_privs are
set once in the zygote and come with every fork, and what both processes
share (rlimits, scratch dir, uid, not dumpable) is set once in the first
process, before it forks the solution's. Forking a warm interpreter instead
of starting Python is what makes this fast; and each worker is pinned to one
of the caller's CPUs (round robin), its zygote and candidates with it: a
candidate's processes hand work to each other and to the worker many times,
and on one core each handoff is a switch rather than the wake-up of an idle
core (about a tenth of the throughput). Pinning is for speed only: a
candidate may move itself, and the cgroups still share out the CPU.

The worker kills the candidate at the wall-clock timeout; as PID 1 its death
makes the kernel kill everything it started, even processes that left its
process group, so nothing outlives it. RLIMIT_NPROC binds because the
candidate is not root, and each worker has its own uid, so concurrent
candidates share no process budget and cannot signal or ptrace each other.
Worker uids are reserved host-wide (a lock file per uid), so two Sandboxes,
in one process or many, never share one. If a worker or its zygote dies, the
caller starts another and runs the jobs it held again; only a job that took
two workers down gets the verdict "error".

Threat model
------------
Host and neighbours (kernel-enforced; holds against arbitrary code, native
code included): no network, no writes outside the scratch tmpfs, no host
files beyond system libraries and the interpreter, no view of other
processes, no signals or ptrace outside its namespace, no caller secrets
(environment scrubbed), nothing of earlier candidates in memory, bounded CPU
share, memory, processes, files and output, and nothing survives the
candidate. The only process that reports to the caller is the worker, which
never executes candidate code and whose pipes the candidate does not hold,
so a candidate can never touch another candidate's verdict or the caller.

A candidate's own verdict is decided where its code never runs. The tests
run in the tests' process; each name the solution defines becomes a stand-in
there that sends its arguments to the solution's process and returns the
answer. Arguments, answers and exceptions cross as plain data only (JSON of
exact builtin types: None, bool, int, float, complex, str, bytes, list,
tuple, set, frozenset, dict; exceptions by builtin class name and message),
decoded into fresh objects in the tests' process, so no object of the
solution's making (one that compares equal to everything, say) reaches a
test. "passed" needs, on a private pipe (fd 4 of the tests' process), a
ready byte written once both processes are locked down, then a 16-byte
random nonce the tests' process reads from another pipe (fd 3) only after
the tests returned normally, then its exit status 0, all before the
timeout. The worker keeps only the nonce's SHA-256. The solution's process
never holds the tests, the nonce or the channel, and cannot read the tests'
process's memory (not dumpable, no ptrace): calling `sys.exit` or
`os._exit`, raising anything, rebinding builtins, skipping asserts with a
trace function, walking frames or the garbage collector for the tests or
the nonce, re-entering the harness, or writing guesses to any fd cannot
yield a pass. What is left to a solution is to be a function: its answers
to the tests' calls.

With `tests_process = "shared"` the tests run in the solution's process, at
1.3 to 1.8 times the rate (one fork per candidate instead of two). The harness
then binds what it uses after the tests to locals before candidate code runs,
so exits, exceptions, printing or rebinding builtins still cannot pass; but
code written to forge a pass can (read the nonce from fd 3 and write it to
fd 4, walk the frames for the tests and answer from them, skip asserts with
a trace function, return an object equal to everything), as in any harness
that runs tests in the candidate's process. It still cannot touch another
candidate or the host.

What the tests' own process costs: tests use the solution through its functions (and classes
called as functions), its plain-valued globals as read once it has loaded,
and the modules it imported (imported again by name in the tests' process);
what a call returns must be plain data (not an instance of a class of its
own, a generator or a function); functions cannot be passed as arguments;
and a test does not see an argument the solution changed in place.
HumanEval's tests and assert-style unit tests of functions stay within this.

Without root (no CAP_SYS_ADMIN), each worker starts as root of a user
namespace of its own and PID 1 of a PID namespace it owns (bubblewrap's
`bwrap --unshare-user --unshare-pid --cap-add ALL` where it is installed, else
util-linux `unshare --user --map-root-user --pid --fork`; `Sandbox.launcher`
says which, "root" when none was needed), where it can make the same
mount, PID, network and IPC namespaces and the same minimal root; candidates
keep uid 0 of that namespace (the caller's own uid outside) but with every
capability dropped. Cgroups and per-worker uids are then missing: no memory
cap beyond RLIMIT_AS, and candidates share the caller's process budget.

If the host cannot provide a layer the sandbox says which and refuses to
start unless `allow_weaker_isolation=True`; the missing layers are then
recorded on every `Result`.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import fcntl
import gc
import hashlib
import hmac
import importlib
import json
import linecache
import marshal
import os
import random
import resource
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

# shutil, subprocess and tempfile are imported where they are used, never before the
# zygote forks: every candidate is forked from it, and a fork (and exit) costs less the
# fewer mappings it copies (those modules bring bz2, lzma, zlib and threading along).

if TYPE_CHECKING:  # this file also runs as the workers' script: no codemill imports there
    from codemill.selfinstruct.config import SandboxConfig

LAYERS: dict[str, str] = {
    "mount": "private mount namespace: a minimal read-only root (system libraries, the interpreter, "
             "four /dev nodes) and a scratch tmpfs per candidate",
    "pid": "a fresh PID namespace per candidate: sees no other process, takes its children along",
    "net": "a network namespace per worker: no network, loopback down, no socket can be named",
    "ipc": "a fresh IPC namespace per candidate: no System V or POSIX IPC object outlives it",
    "cgroup": "a cgroup per worker capping the memory, processes and CPU share of a candidate's "
              "whole tree",
    "uid": "unprivileged uid/gid per worker: process limit binds; no signals, ptrace or root files",
    "seccomp": "a seccomp filter: no new user namespaces, ptrace, keyrings, BPF, perf events, "
               "userfaultfd or named sockets",
}


@dataclass(frozen=True)
class Candidate:
    """A solution and its tests: assert statements, or a block defining
    `check(candidate)` that is called on `entry_point` when one is given."""

    solution: str
    tests: str | Sequence[str]
    entry_point: str | None = None

    def test_source(self) -> str:
        source = self.tests if isinstance(self.tests, str) else "\n".join(self.tests)
        if self.entry_point is not None:
            if not self.entry_point.isidentifier():
                raise ValueError(f"entry point is not an identifier: {self.entry_point!r}")
            source += f"\n\ncheck({self.entry_point})\n"
        return source


@dataclass(frozen=True)
class Result:
    passed: bool
    status: str                         # passed | failed | timeout | error
    exit_code: int | None               # None when killed by a signal
    signal: int | None
    duration_s: float
    stdout: str
    stderr: str
    missing_layers: tuple[str, ...] = ()


class SandboxUnavailable(RuntimeError):
    """The host cannot provide an isolation layer and weaker isolation was not allowed."""


# --- wire protocol between the caller and its workers (both trusted) ---------

_FRAME = struct.Struct("<I")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_frame(fd: int, body: bytes) -> None:
    _write_all(fd, _FRAME.pack(len(body)) + body)


def _send(fd: int, message: object) -> None:
    _write_frame(fd, marshal.dumps(message))


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, limit: int | None = None) -> bytes | None:
    """One frame's body; None at the end of the stream; ValueError past `limit` bytes."""
    header = _read_exact(fd, _FRAME.size)
    if header is None:
        return None
    size = _FRAME.unpack(header)[0]
    if limit is not None and size > limit:
        raise ValueError(f"a message of {size} bytes")
    return _read_exact(fd, size)


def _recv(fd: int) -> object | None:
    body = _read_frame(fd)
    return None if body is None else marshal.loads(body)


class _Frames:
    """Reassembles framed messages from a non-blocking stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self.buf += data
        out = []
        while len(self.buf) >= _FRAME.size:
            size = _FRAME.unpack_from(self.buf)[0]
            if len(self.buf) < _FRAME.size + size:
                break
            out.append(marshal.loads(bytes(self.buf[_FRAME.size:_FRAME.size + size])))
            del self.buf[:_FRAME.size + size]
        return out


# --- the caller's side ---------------------------------------------------------

_CAP_SYS_ADMIN = 21     # <linux/capability.h>
_PIPELINE = 2           # jobs queued per worker, so it never waits for the caller
_MAX_WORKER_DEATHS = 2  # a job held by this many dying workers fails with "error"
_UID_SPAN = 1 << 16     # uids tried from uid_base up
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


def _reserve_uids(base: int, count: int) -> tuple[list[int], list[int]]:
    """`count` uids from `base` up that no other Sandbox on this host holds, and the locks
    (open fds, released when closed) that hold them for this one."""
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"codemill-sandbox-uids-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    uids: list[int] = []
    locks: list[int] = []
    for uid in range(base, base + _UID_SPAN):
        fd = os.open(os.path.join(folder, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        uids.append(uid)
        locks.append(fd)
        if len(uids) == count:
            return uids, locks
    for fd in locks:
        os.close(fd)
    raise SandboxUnavailable(f"no free sandbox uid in [{base}, {base + _UID_SPAN})")


_BWRAP_ARGS = ("--unshare-user", "--uid", "0", "--gid", "0", "--unshare-pid", "--die-with-parent",
               "--cap-add", "ALL", "--bind", "/", "/", "--proc", "/proc", "--dev-bind", "/dev", "/dev", "--")
_UNSHARE_ARGS = ("--user", "--map-root-user", "--pid", "--fork", "--kill-child")


def _launcher(choice: str) -> tuple[str, list[str]]:
    """What starts a worker: ("root", []) with the capabilities the layers need; without
    them, a command that starts it as root of a user namespace of its own and PID 1 of a
    PID namespace owned by it, where it may make every namespace and mount the sandbox
    uses: bubblewrap's or util-linux's (`choice`: "auto" tries them in that order);
    ("none", []) where neither may make a user namespace here."""
    import shutil
    import subprocess

    with open("/proc/self/status") as fh:
        caps = int(next(line for line in fh if line.startswith("CapEff:")).split()[1], 16)
    if caps & (1 << _CAP_SYS_ADMIN):
        return "root", []
    tools = {"bubblewrap": ("bwrap", _BWRAP_ARGS), "unshare": ("unshare", _UNSHARE_ARGS)}
    for name in tools if choice == "auto" else [choice]:
        program, args = tools[name]
        path = shutil.which(program)
        if path and subprocess.run([path, *args, "true"], capture_output=True).returncode == 0:
            return name, [path, *args]
    return "none", []


class _Worker:
    def __init__(self, uid: int, cpu: int, cfg: SandboxConfig, prefix: list[str]) -> None:
        import subprocess

        # -s -P: no user site, no script directory on sys.path; env is ours alone
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-s", "-P", os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_ENV,
            close_fds=True, start_new_session=True)
        self.inflight: deque[int] = deque()
        self.frames = _Frames()
        self.cgroups: list[str] = []
        self.uid, self.cpu = uid, cpu
        _send(self.proc.stdin.fileno(), dict(asdict(cfg), uid=uid, cpu=cpu))

    def handshake(self) -> tuple[str, ...]:
        reply = _recv(self.proc.stdout.fileno())
        if reply is None:
            raise SandboxUnavailable("a sandbox worker failed to start")
        missing, self.cgroups = reply
        return tuple(missing)

    def close(self) -> None:
        import subprocess

        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        for group in self.cgroups:  # empty once its last candidate is gone
            try:
                os.rmdir(group)
            except OSError:  # a candidate killed a moment ago may still be exiting: left behind
                pass


class Sandbox:
    """A pool of warm workers; `run` may be called many times (from one thread at a time).

    Raises SandboxUnavailable at start when an isolation layer is missing and
    `cfg.allow_weaker_isolation` is False.
    """

    def __init__(self, cfg: SandboxConfig | None = None) -> None:
        if cfg is None:
            from codemill.selfinstruct.config import SandboxConfig
            cfg = SandboxConfig()
        self.cfg = cfg
        count = self.cfg.workers or len(os.sched_getaffinity(0))
        self._workers: list[_Worker] = []
        self._uid_locks: list[int] = []
        try:
            uids, self._uid_locks = _reserve_uids(self.cfg.uid_base, count)
            self.launcher, self._prefix = _launcher(self.cfg.rootless_launcher)
            cpus = sorted(os.sched_getaffinity(0))
            for i, uid in enumerate(uids):
                self._workers.append(_Worker(uid, cpus[i % len(cpus)], self.cfg, self._prefix))
            missing = set()
            for worker in self._workers:
                missing.update(worker.handshake())
        except BaseException:
            self.close()
            raise
        self.missing_layers = tuple(layer for layer in LAYERS if layer in missing)
        if self.missing_layers and not self.cfg.allow_weaker_isolation:
            self.close()
            raise SandboxUnavailable(
                "this host cannot provide: "
                + "; ".join(f"{layer} ({LAYERS[layer]})" for layer in self.missing_layers)
                + ". Run as root on Linux with namespaces, or pass allow_weaker_isolation=True.")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []
        for fd in self._uid_locks:
            os.close(fd)
        self._uid_locks = []

    def run(self, candidates: Sequence[Candidate]) -> list[Result]:
        """Run every candidate; results come back in input order. If this raises (or is
        interrupted) the sandbox closes: workers may still hold jobs of this call."""
        if not self._workers:
            raise RuntimeError("the sandbox is closed")
        jobs = deque((i, c.solution, c.test_source()) for i, c in enumerate(candidates))
        by_id = {job[0]: job for job in jobs}
        deaths = [0] * len(candidates)  # workers that died while holding each job
        results: list[Result | None] = [None] * len(candidates)
        sel = selectors.DefaultSelector()

        def feed(worker: _Worker) -> None:
            while jobs and len(worker.inflight) < _PIPELINE:
                job = jobs.popleft()
                worker.inflight.append(job[0])
                try:
                    _send(worker.proc.stdin.fileno(), job)
                except BrokenPipeError:  # it died: its end of file is seen below
                    return

        for worker in self._workers:
            sel.register(worker.proc.stdout, selectors.EVENT_READ, worker)
            feed(worker)
        try:
            while jobs or any(w.inflight for w in self._workers):
                for key, _ in sel.select():
                    worker = key.data
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        sel.unregister(key.fileobj)
                        # Verdicts are per candidate: the jobs it held run again on another
                        # worker, and only a job that took two workers down is an error.
                        for job_id in reversed(worker.inflight):
                            deaths[job_id] += 1
                            if deaths[job_id] < _MAX_WORKER_DEATHS:
                                jobs.appendleft(by_id[job_id])
                            else:
                                results[job_id] = self._result("error", None, None, 0.0, b"",
                                                               b"sandbox workers died running it")
                        worker.inflight.clear()
                        replacement = self._replace(worker)
                        sel.register(replacement.proc.stdout, selectors.EVENT_READ, replacement)
                        feed(replacement)
                        continue
                    for job_id, *fields in worker.frames.feed(data):
                        worker.inflight.remove(job_id)
                        results[job_id] = self._result(*fields)
                    feed(worker)
        except BaseException:
            self.close()
            raise
        finally:
            sel.close()
        return results  # type: ignore[return-value]

    def _result(self, status: str, exit_code: int | None, sig: int | None, duration: float,
                stdout: bytes, stderr: bytes) -> Result:
        return Result(status == "passed", status, exit_code, sig, duration,
                      stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
                      self.missing_layers)

    def _replace(self, dead: _Worker) -> _Worker:
        """A worker died (only root could kill it): start another on its uid."""
        slot = self._workers.index(dead)
        dead.close()
        self._workers[slot] = _Worker(dead.uid, dead.cpu, self.cfg, self._prefix)
        self._workers[slot].handshake()
        return self._workers[slot]


def run_candidates(programs: Sequence[Candidate], cfg: SandboxConfig | None = None) -> list[Result]:
    """One-shot convenience: start a Sandbox, run the candidates, stop it."""
    with Sandbox(cfg) as sandbox:
        return sandbox.run(programs)


# --- the worker's side (runs in the worker process, started as a script) --------

_libc = ctypes.CDLL(None, use_errno=True)
_ulong = ctypes.c_ulong
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, _ulong, _ulong, _ulong, _ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint,
                          ctypes.c_char_p, ctypes.c_size_t]
# from <linux/sched.h>, <linux/mount.h>, <linux/prctl.h>
CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
_NAMESPACES = {"pid": CLONE_NEWPID, "ipc": CLONE_NEWIPC}  # fresh per candidate (net: per worker)
_CHILD_LAYERS = (*_NAMESPACES, "uid", "seccomp")  # tried in that order: seccomp last
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, -1)  # -1: ENOSYS
_libc_pivot = ctypes.CDLL(None, use_errno=True)  # its own syscall() prototype
_libc_pivot.syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p]
# What the minimal root shows of the host, read-only (a missing one is skipped).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc.capset.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
MNT_DETACH = 2
_STDIN, _STDOUT, _STDERR, _NONCE_FD, _CHANNEL_FD = 0, 1, 2, 3, 4
_CALLS_FD, _REPLIES_FD = 5, 6                     # the tests' process's ends of the calls
_SOLUTION_CALLS_FD, _SOLUTION_REPLIES_FD = 3, 4   # and the solution's process's
_READY = b"R"
_PLAIN_MESSAGE_BYTES = 64 << 20
PR_SET_DUMPABLE = 4
# The seccomp filter (classic BPF over struct seccomp_data: nr at 0, arch at 4, args from
# 16). Denied: calls that only widen the kernel surface a candidate can reach, and naming
# a socket (bind, listen), the one thing the worker's network namespace, which its
# candidates share one after another, could otherwise carry from one to the next.
_SECCOMP_ARCH = {  # machine: (AUDIT_ARCH_*, unshare, clone, clone3, denied calls)
    # ptrace, add_key, request_key, keyctl, perf_event_open, bpf, userfaultfd, bind, listen
    "x86_64": (0xC000003E, 272, 56, 435, (101, 248, 249, 250, 298, 321, 323, 49, 50)),
    "aarch64": (0xC00000B7, 97, 220, 435, (117, 217, 218, 219, 241, 280, 282, 200, 201)),
}
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, CLONE_NEWUSER = 22, 2, 0x10000000
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def _seccomp_filter() -> bytes | None:
    """The filter program for this machine (None where it has no table)."""
    arch = _SECCOMP_ARCH.get(os.uname().machine)
    if arch is None:
        return None
    audit_arch, unshare, clone, clone3, denied = arch

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("<HBBI", code, jt, jf, k)

    load, ret, jeq, jge, jset = 0x20, 0x06, 0x15, 0x35, 0x45
    eperm = _RET_ERRNO | errno.EPERM
    prog = [op(load, 4), op(jeq, audit_arch, 1, 0), op(ret, _RET_KILL), op(load, 0)]
    if os.uname().machine == "x86_64":  # the x32 ABI's numbers would bypass the table
        prog += [op(jge, 0x40000000, 0, 1), op(ret, eperm)]
    for nr in denied:
        prog += [op(jeq, nr, 0, 1), op(ret, eperm)]
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone.
    prog += [op(jeq, clone3, 0, 1), op(ret, _RET_ERRNO | errno.ENOSYS)]
    prog += [op(jeq, unshare, 1, 0), op(jeq, clone, 0, 3), op(load, 16),
             op(jset, CLONE_NEWUSER, 0, 1), op(ret, eperm), op(ret, _RET_ALLOW)]
    return b"".join(prog)


def _install_seccomp(program: bytes) -> None:
    """Install the filter on this process (no_new_privs must be set); its children inherit it."""
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("<HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    buf = ctypes.create_string_buffer(fprog, len(fprog))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(buf))


_WARM_MODULES = (
    "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
    "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "operator",
    "random", "re", "statistics", "string", "textwrap", "typing", "unicodedata",
)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _prctl(option: int, arg: int, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg, arg3, 0, 0), "prctl")


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
           f"mount {target}")


def _private_filesystem() -> None:
    """Worker-wide: a minimal read-only root and a tmpfs on /tmp for the scratch dirs.

    The root is a fresh tmpfs holding read-only binds of the system's programs and
    libraries (/usr and its kin), the interpreter (its install and the packages it
    imports), the dynamic loader's cache and /dev/null, zero, random and urandom; the
    worker pivots into it and detaches the host's tree. Nothing else of the host is
    reachable: no /proc, /sys, /run, /var, /home or /etc, no Unix socket files, no
    pseudo-terminals."""
    _unshare(CLONE_NEWNS)
    _mount("none", "/", "", MS_REC | MS_PRIVATE, "")  # nothing we mount may propagate to the host
    # Every bind source is opened before the new root's tmpfs covers the host's /tmp, so an
    # interpreter installed under /tmp (a virtualenv in a fresh clone there) is still bound.
    links = {path: os.readlink(path) for path in _SYSTEM_DIRS if os.path.islink(path)}
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC)
               for path in (*_SYSTEM_DIRS, *_interpreter_dirs(), *_SYSTEM_FILES)
               if path not in links and os.path.exists(path)}
    new = "/tmp"  # its tmpfs becomes the root; the host's /tmp goes out of sight with the rest
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    os.mkdir(new + "/tmp")  # the new /tmp first: binds beneath it go on top of it
    _mount("tmpfs", new + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=16384,mode=0755")
    for path, target in links.items():
        os.symlink(target, new + path)
    for path, fd in sources.items():
        _bind(fd, new + path)
        os.close(fd)
    os.mkdir(new + "/.old")
    _check(_libc_pivot.syscall(SYS_PIVOT_ROOT, new.encode(), (new + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount")
    os.rmdir("/.old")
    _set_mount_attr("/", AT_RECURSIVE, set_=MOUNT_ATTR_RDONLY)
    _set_mount_attr("/tmp", 0, clear=MOUNT_ATTR_RDONLY)  # the worker's scratch root goes there


def _set_mount_attr(path: str, flags: int, set_: int = 0, clear: int = 0) -> None:
    attr = struct.pack("<QQQQ", set_, clear, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, attr, len(attr)),
           f"mount_setattr {path}")


def _bind(source: int, target: str) -> None:
    """A recursive bind of an opened directory or file at `target`, creating the mount point."""
    if stat.S_ISDIR(os.fstat(source).st_mode):
        os.makedirs(target, mode=0o755)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(f"/proc/self/fd/{source}", target, "", MS_BIND | MS_REC, "")


def _interpreter_dirs() -> list[str]:
    """The interpreter's install and the directories it imports from inside it or its
    virtualenv, outermost only (not other sys.path entries, such as a project's tree)."""
    homes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    dirs = {os.path.realpath(p) for p in sys.path if os.path.isdir(p)}
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    dirs = {d for d in dirs if any(d == h or d.startswith(h + os.sep) for h in homes)}
    dirs.add(os.path.realpath(sys.base_prefix))
    return sorted(d for d in dirs if not any(d.startswith(o + os.sep) for o in dirs))


def _in_child(body, *args) -> int:
    """Fork; the child runs body and always exits, never returning into the worker's loop."""
    exit_ = os._exit  # bound before body runs: candidate code may rebind os._exit
    pid = os.fork()
    if pid == 0:
        try:
            body(*args)
        except BaseException:
            traceback.print_exc()
        finally:
            exit_(70)
    return pid


def _try_layers(uid: int, pid_ns: int, w: int) -> None:
    for layer in _CHILD_LAYERS:
        try:
            if layer == "seccomp":
                program = _seccomp_filter()
                if program is None:
                    continue
                _prctl(PR_SET_NO_NEW_PRIVS, 1)
                _install_seccomp(program)
            elif layer == "uid":
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            else:
                _unshare(_NAMESPACES[layer])
                if layer == "pid":  # and back, as after each candidate
                    _check(_libc.setns(pid_ns, CLONE_NEWPID), "setns")
            os.write(w, layer.encode() + b" ")
        except OSError:
            pass


def _missing_child_layers(uid: int, pid_ns: int) -> list[str]:
    """Which per-candidate layers can this host give? Tried in a throwaway child."""
    r, w = os.pipe()
    pid = _in_child(_try_layers, uid, pid_ns, w)
    os.close(w)
    got = b""
    while chunk := os.read(r, 256):
        got += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return [layer for layer in _CHILD_LAYERS if layer not in got.decode().split()]


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller ("" for the v2 hierarchy), from /proc."""
    own = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path.rstrip("/")
    return own


def _candidate_cgroups(name: str, memory: int, nproc: int) -> tuple[list[str], list[int]]:
    """Cgroups capping a candidate's whole tree (memory, processes) and giving it one equal
    CPU share beside the other workers' candidates, nested under this process's own cgroups
    so that the caller's limits hold too: their dirs, and their cgroup.procs opened for the
    candidate to write itself into (the worker stays out, so an OOM kill never hits it)."""
    root, own = "/sys/fs/cgroup", _own_cgroups()
    if os.path.exists(f"{root}/cgroup.controllers"):  # v2: one hierarchy
        # A cgroup with processes cannot hand controllers to children (v2's rule against
        # internal processes): then the workers' groups go under the root.
        parent = root
        for candidate_parent in dict.fromkeys((f"{root}{own.get('', '')}", root)):
            try:
                with open(f"{candidate_parent}/cgroup.subtree_control", "w") as fh:
                    fh.write("+memory +pids +cpu")
                parent = candidate_parent
                break
            except OSError:
                continue
        groups = {f"{parent}/{name}": {"memory.max": memory, "pids.max": nproc, "cpu.weight": 100}}
    else:  # v1: a hierarchy per controller
        groups = {f"{root}/memory{own.get('memory', '')}/{name}": {"memory.limit_in_bytes": memory},
                  f"{root}/pids{own.get('pids', '')}/{name}": {"pids.max": nproc},
                  f"{root}/cpu{own.get('cpu', '')}/{name}": {"cpu.shares": 1024}}
    dirs, procs = [], []
    try:
        for group, limits in groups.items():
            os.mkdir(group)
            dirs.append(group)
            for knob, value in limits.items():
                with open(f"{group}/{knob}", "w") as fh:
                    fh.write(str(value))
            procs.append(_high(os.open(f"{group}/cgroup.procs", os.O_WRONLY)))
    except OSError:
        for fd in procs:
            os.close(fd)
        for group in dirs:
            os.rmdir(group)
        raise
    return dirs, procs


class _WorkerState:
    def __init__(self, conf: dict, missing: tuple[str, ...], pid_ns: int,
                 cgroup_procs: list[int]) -> None:
        self.timeout, self.uid = conf["timeout_s"], conf["uid"]
        self.tests_process = conf["tests_process"]
        self.output_bytes = conf["output_bytes"]
        self.scratch_bytes = conf["scratch_bytes"]
        limits = ((resource.RLIMIT_CPU, int(self.timeout) + 1),
                  (resource.RLIMIT_AS, conf["memory_bytes"]),
                  (resource.RLIMIT_FSIZE, conf["max_file_bytes"]),
                  (resource.RLIMIT_NOFILE, conf["max_open_files"]),
                  (resource.RLIMIT_CORE, 0))
        self.rlimits = tuple((limit, _within_hard_limit(limit, value)) for limit, value in limits)
        # Set by each process itself, after the first has forked the solution's: where processes
        # are counted per host uid (kernels before 5.14, without root) the fork could fail
        self.max_processes = _within_hard_limit(resource.RLIMIT_NPROC, conf["max_processes"])
        self.missing = missing
        self.pid_ns = pid_ns  # the worker's own PID namespace, to return to after each fork
        self.cgroup_procs = cgroup_procs
        self.flags = sum(flag for layer, flag in _NAMESPACES.items() if layer not in missing)
        if "mount" in missing:
            import tempfile

            self.scratch_root = tempfile.mkdtemp(prefix="codemill-sandbox-")
            os.chmod(self.scratch_root, 0o711)
            tempfile.tempdir = None  # candidates' tempfile follows their TMPDIR
        else:
            self.scratch_root = "/tmp/scratch"  # a tmpfs of its own, so it can be replaced whole
            os.mkdir(self.scratch_root)
            _mount_scratch_root(self)
        self.devnull = _high(os.open(os.devnull, os.O_RDONLY))
        self.seccomp = None if "seccomp" in missing else _seccomp_filter()
        self.count = 0


def _within_hard_limit(limit: int, value: int) -> int:
    """Without root a limit cannot be raised above its hard limit."""
    hard = resource.getrlimit(limit)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _high(fd: int) -> int:
    """Move fd above the numbers the candidate's fds are dup2'ed onto."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    return _high(r), _high(w)


class _ZygoteGone(Exception):
    """The zygote died: the worker stops, and the caller re-runs its jobs elsewhere."""


def _ask(zygote: socket.socket, message: bytes, fds: Sequence[int] = ()) -> int:
    try:
        socket.send_fds(zygote, [message], list(fds))
        reply = zygote.recv(8)
    except OSError:  # its end is closed
        raise _ZygoteGone from None
    if len(reply) != 8:
        raise _ZygoteGone
    return struct.unpack("<q", reply)[0]


def _mount_scratch_root(st: _WorkerState) -> None:
    _mount("tmpfs", st.scratch_root, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={st.scratch_bytes},nr_inodes=16384,mode=0755")


def _make_scratch(st: _WorkerState, scratch: str) -> None:
    os.mkdir(scratch, 0o700)
    if "uid" not in st.missing:
        os.chown(scratch, st.uid, st.uid)


def _drop_scratch(st: _WorkerState, scratch: str) -> None:
    """Whatever the candidate left goes, however deep or unwritable; never raises. When a
    plain removal fails (a tree too deep for rmtree's recursion, say), the worker's scratch
    tmpfs is detached whole and a fresh one mounted (else `rm`, which walks any depth)."""
    import shutil

    try:
        os.rmdir(scratch)  # most candidates leave nothing behind
        return
    except OSError:
        pass
    try:
        shutil.rmtree(scratch)
        return
    except Exception:  # RecursionError is not an OSError
        pass
    try:
        if "mount" not in st.missing:
            _check(_libc.umount2(st.scratch_root.encode(), MNT_DETACH), "umount")
            _mount_scratch_root(st)
        else:
            import subprocess  # only here: the worker has no other use for it

            subprocess.run(["rm", "-rf", "--one-file-system", "--", scratch],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    except OSError:
        pass


def _write_whole(fd: int, data: bytes) -> None:
    """All of `data` into an empty pipe, grown to hold it, so the writer never blocks."""
    if len(data) > fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, len(data))
    _write_all(fd, data)


def _run_job(st: _WorkerState, zygote: socket.socket, solution: str, tests: str) -> tuple:
    st.count += 1
    scratch = os.path.join(st.scratch_root, f"c{st.count}")
    _make_scratch(st, scratch)
    fds: list[int] = []
    try:
        for _ in range(6):  # the zygote moves its copies clear of the candidate's numbers
            fds.extend(os.pipe())
        out_r, out_w, err_r, err_w, nonce_r, nonce_w, chan_r, chan_w, sol_r, sol_w, tests_r, tests_w = fds
        # The job waits in pipes read after the fork: the zygote never holds any job, so no
        # candidate inherits another's data; solution and tests travel apart, each read
        # only by the process that runs it.
        _write_whole(sol_w, marshal.dumps(solution))
        _write_whole(tests_w, marshal.dumps(tests))
        nonce = os.urandom(16)
        os.write(nonce_w, nonce)
        digest = hashlib.sha256(nonce).digest()
        del nonce  # only its digest stays in the worker
        child = _ask(zygote, b"F" + scratch.encode(), (out_w, err_w, nonce_r, chan_w, sol_r, tests_r))
        if child < 0:
            raise OSError(-child, f"fork: {os.strerror(-child)}")
        started = time.monotonic()
        for fd in (out_w, err_w, nonce_r, nonce_w, chan_w, sol_r, sol_w, tests_r, tests_w):
            fds.remove(fd)
            os.close(fd)
        return _collect(st, zygote, child, started, out_r, err_r, chan_r, digest)
    finally:
        for fd in fds:
            os.close(fd)
        _drop_scratch(st, scratch)


def _zygote(st: _WorkerState, requests: socket.socket) -> None:
    """Forks each candidate on the worker's request ("F" + scratch dir, with the
    candidate's pipes) and replies with its pid; reaps it when asked ("W" + pid) and
    replies with its wait status. It never receives job data or results."""
    while True:
        msg, fds = socket.recv_fds(requests, 4096, 8)[:2]
        if not msg:  # the worker is done
            return
        fds = [_high(fd) for fd in fds]  # clear of the numbers the candidate dup2s onto
        if msg[:1] == b"F":
            try:
                reply = _fork_candidate(st, msg[1:].decode(), tuple(fds))
            except OSError as exc:
                reply = -(exc.errno or 1)
            finally:
                for fd in fds:
                    os.close(fd)
        else:
            reply = os.waitpid(struct.unpack("<q", msg[1:])[0], 0)[1]
        requests.send(struct.pack("<q", reply))


def _fork_candidate(st: _WorkerState, scratch: str, fds: tuple[int, ...]) -> int:
    """Fork the candidate as PID 1 of fresh PID and IPC namespaces."""
    if st.flags:
        _unshare(st.flags)  # the next child lands in the new namespaces
    try:
        return _in_child(_candidate, st, scratch, fds)
    finally:
        if st.flags & CLONE_NEWPID:  # so that the next unshare may make another one
            _check(_libc.setns(st.pid_ns, CLONE_NEWPID), "setns")


def _read_source(fd: int) -> str:
    data = bytearray()
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return marshal.loads(data)


def _confine(st: _WorkerState, scratch: str) -> None:
    """What a candidate's processes share, set once before the solution's process is
    forked (it inherits them): stdin from /dev/null, rlimits but the process limit, the
    scratch dir, no uid or capability of its own, not dumpable. No new privileges and the
    seccomp filter came with the fork from the zygote."""
    os.dup2(st.devnull, _STDIN)
    for limit, value in st.rlimits:
        resource.setrlimit(limit, (value, value))
    os.chdir(scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch  # the rest is the worker's scrubbed env
    if "uid" not in st.missing:
        os.setgroups([])
        os.setresgid(st.uid, st.uid, st.uid)
        os.setresuid(st.uid, st.uid, st.uid)  # a uid change from 0 clears every capability
    else:  # still uid 0 (of a user namespace, rootless): at least no capability is left
        _drop_capabilities()
    _prctl(PR_SET_DUMPABLE, 0)  # its memory stays closed to same-uid processes (/proc/pid/mem)


def _lock_down(st: _WorkerState, fds: dict[int, int]) -> None:
    """The last step before job code runs in a confined process: its process limit, `fds`
    (target number: open fd) dup2'ed into place and every other fd closed."""
    resource.setrlimit(resource.RLIMIT_NPROC, (st.max_processes, st.max_processes))
    for target, fd in fds.items():
        os.dup2(fd, target, inheritable=target <= _STDERR)
    os.closerange(max(fds) + 1, 1 << 20)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited, and cleared by a credential change
    random.seed(0)  # every fork reseeds it from urandom: each candidate starts from one state


def _candidate(st: _WorkerState, scratch: str, fds: tuple[int, ...]) -> None:
    """PID 1 of the candidate's namespaces: forks the solution's process, then runs the
    tests here, calling the solution's functions across a pipe; passes are proven here."""
    os.setsid()
    for fd in st.cgroup_procs:  # before the fork: the solution's process is born inside
        os.write(fd, b"0")  # "0": the writer itself; its descendants follow
    out_w, err_w, nonce_r, chan_w, sol_r, tests_r = fds
    if st.tests_process == "shared":
        _one_process(st, scratch, fds)
    calls_r, calls_w = _pipe()
    replies_r, replies_w = _pipe()
    _confine(st, scratch)  # once for both processes: the solution's inherits it
    solution_pid = _in_child(_solution_process, st, scratch, (out_w, err_w, sol_r, calls_r, replies_w))
    for fd in (sol_r, calls_r, replies_w):
        os.close(fd)
    tests = _read_source(tests_r)
    _lock_down(st, {_STDOUT: out_w, _STDERR: err_w, _NONCE_FD: nonce_r, _CHANNEL_FD: chan_w,
                    _CALLS_FD: calls_w, _REPLIES_FD: replies_r})
    exit_, read, write, fail = os._exit, os.read, os.write, BaseException
    if _recv_plain(_REPLIES_FD) != "ready":  # the solution's process could not lock down
        exit_(1)
    write(_CHANNEL_FD, _READY)
    try:
        exported = _recv_plain(_REPLIES_FD)
        if exported is None:
            raise RuntimeError("the solution did not load (its error is above)")
        exec(compile(tests, "<tests>", "exec", dont_inherit=True), _tests_namespace(exported))
    except fail as exc:
        _end_solution(solution_pid)
        _report(exc, "<tests>", tests)
        exit_(1)
    _end_solution(solution_pid)
    _flush()
    write(_CHANNEL_FD, read(_NONCE_FD, 16))
    exit_(0)


def _end_solution(pid: int) -> None:
    """No more calls: the solution's process flushes its output and exits (first, so
    that its output comes before the tests' report)."""
    os.close(_CALLS_FD)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _solution_process(st: _WorkerState, scratch: str, fds: tuple[int, ...]) -> None:
    """Runs the solution, then calls its functions as the tests' process asks, answering
    with plain data only. It never holds the tests, the pass proof or the channel."""
    out_w, err_w, sol_r, calls_r, replies_w = fds
    solution = _read_source(sol_r)
    _lock_down(st, {_STDOUT: out_w, _STDERR: err_w, _SOLUTION_CALLS_FD: calls_r,
                    _SOLUTION_REPLIES_FD: replies_w})
    exit_, fail = os._exit, BaseException  # bound before candidate code can rebind them
    send, recv, plain = _send_plain, _recv_plain, _to_plain
    send(_SOLUTION_REPLIES_FD, "ready")
    namespace = {"__name__": "solution"}
    try:
        exec(compile(solution, "<solution>", "exec", dont_inherit=True), namespace)  # candidate code from here
        send(_SOLUTION_REPLIES_FD, _exported(namespace))
    except fail as exc:
        _report(exc, "<solution>", solution)
        exit_(1)
    while (call := recv(_SOLUTION_CALLS_FD)) is not None:
        try:
            name, args, kwargs = call[0], _from_plain(call[1]), _from_plain(call[2])
            reply = ["ok", plain(namespace[name](*args, **kwargs))]
        except fail as exc:
            reply = ["raise", _exception_name(exc), _exception_text(exc)]
        send(_SOLUTION_REPLIES_FD, reply)
    _flush()
    exit_(0)


# --- calls between the tests' process and the solution's: plain data only ---------
# Values cross as JSON of exact builtin types (no subclass, so no object of the
# solution's making can compare equal to everything); the tests' process decodes them
# into fresh objects of its own.

_TAGGED = {"tuple": tuple, "set": set, "frozenset": frozenset}


def _to_plain(value: object, depth: int = 0) -> object:
    """`value` as JSON data, when it is built of plain builtin types; else TypeError."""
    if depth > 200:
        raise ValueError("a value nested too deeply to pass between processes")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [_to_plain(v, depth + 1) for v in value]
    if kind in (tuple, set, frozenset):
        return {kind.__name__: [_to_plain(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[_to_plain(k, depth + 1), _to_plain(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    raise TypeError(f"a value of type {kind.__name__} cannot pass between the tests and the solution "
                    "(only None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict)")


def _from_plain(data: object) -> object:
    """The value `_to_plain` made `data` of."""
    if type(data) is list:
        return [_from_plain(v) for v in data]
    if type(data) is not dict:
        return data
    ((tag, body),) = data.items()
    if tag in _TAGGED:
        return _TAGGED[tag](_from_plain(v) for v in body)
    if tag == "dict":
        return {_from_plain(k): _from_plain(v) for k, v in body}
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "complex":
        return complex(*body)
    raise ValueError(f"not a plain value: {tag!r}")


def _send_plain(fd: int, message: object) -> None:
    _write_frame(fd, json.dumps(message, separators=(",", ":")).encode())


def _recv_plain(fd: int) -> object | None:
    body = _read_frame(fd, _PLAIN_MESSAGE_BYTES)
    return None if body is None else json.loads(body)


def _exported(namespace: dict) -> dict:
    """What the solution defined, for the tests: its functions (and classes) by name,
    its plain-valued globals, and the modules it imported (by their names)."""
    functions, values, modules = [], {}, {}
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        if type(value) is types.ModuleType:
            modules[name] = str(value.__name__)
        elif callable(value):
            functions.append(name)
            continue
        try:
            values[name] = _to_plain(value)
        except (TypeError, ValueError):
            pass  # modules and other objects the tests cannot use from afar
    return {"functions": functions, "values": values, "modules": modules}


def _tests_namespace(exported: dict) -> dict:
    """The tests' globals: stand-ins for the solution's functions, copies of its plain
    values, and the modules it imported, imported here afresh (an installed module
    runs its own code, not the solution's)."""
    namespace = {"__name__": "tests"}
    for name, module in exported["modules"].items():
        try:
            namespace[name] = importlib.import_module(module)
        except Exception:
            pass  # a module only the solution's process could import: tests that need it fail
    namespace.update({name: _from_plain(value) for name, value in exported["values"].items()})
    namespace.update({name: _remote_function(name) for name in exported["functions"]})
    return namespace


def _remote_function(name: str):
    """A stand-in, in the tests' process, for the solution's function `name`."""

    def call(*args, **kwargs):
        _send_plain(_CALLS_FD, [name, _to_plain(args), _to_plain(kwargs)])
        reply = _recv_plain(_REPLIES_FD)
        if reply is None:
            raise RuntimeError(f"{name}: the solution's process ended (its error is above)")
        if reply[0] == "ok":
            return _from_plain(reply[1])
        raise _rebuilt_exception(str(reply[1]), str(reply[2]))

    call.__name__ = call.__qualname__ = name
    return call


def _rebuilt_exception(name: str, text: str) -> Exception:
    """The solution's exception as the tests can catch it: the builtin exception of that
    name (a test may expect ValueError), else a RuntimeError naming it."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(text)
        except Exception:
            pass
    return RuntimeError(f"{name}: {text}")


def _exception_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except BaseException:
        return "Exception"


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)[:4096]
    except BaseException:
        return ""


def _one_process(st: _WorkerState, scratch: str, fds: tuple[int, ...]) -> None:
    """`tests_process = "shared"`: solution and tests run in this one process, and the
    harness proves completion from the same process (never returns)."""
    out_w, err_w, nonce_r, chan_w, sol_r, tests_r = fds
    solution, tests = _read_source(sol_r), _read_source(tests_r)
    _confine(st, scratch)
    _lock_down(st, {_STDOUT: out_w, _STDERR: err_w, _NONCE_FD: nonce_r, _CHANNEL_FD: chan_w})
    # What the harness uses once candidate code has run is bound to locals now: that code can
    # rebind builtins and module attributes (exec, os._exit, BaseException...), not these.
    exit_, read, write, fail, report = os._exit, os.read, os.write, BaseException, _report
    run, compile_ = exec, compile
    write(_CHANNEL_FD, _READY)
    try:
        code = (compile_(solution, "<solution>", "exec", dont_inherit=True),
                compile_(tests, "<tests>", "exec", dont_inherit=True))
        namespace = {"__name__": "solution"}
        run(code[0], namespace)  # candidate code runs from here on
        run(code[1], namespace)
    except fail as exc:
        report(exc, "<solution>", solution, "<tests>", tests)
        exit_(1)
    _flush()
    write(_CHANNEL_FD, read(_NONCE_FD, 16))
    exit_(0)


def _report(exc: BaseException, *sources: str) -> None:
    """The traceback of job code to stderr, its lines shown, without the harness frame;
    `sources`: (name, text) pairs of the code it ran."""
    try:
        _flush()
        for name, source in zip(sources[::2], sources[1::2]):
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        trace = _trace(exc, exc.__traceback__.tb_next, set())
        os.write(_STDERR, "".join(trace).encode("utf-8", "replace"))
    except BaseException:
        pass


def _trace(exc: BaseException, tb: types.TracebackType | None, seen: set[int]) -> list[str]:
    """`traceback.format_exception`'s text, chained exceptions included, without the
    harness's frames or the carets under each line: placing those parses every line
    again, which doubled the memory a failing candidate's process touches after its fork
    (and so its copy-on-write faults): a tenth of the sandbox's CPU went to formatting."""
    seen.add(id(exc))
    lines: list[str] = []
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        lines += _trace(exc.__cause__, exc.__cause__.__traceback__, seen)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif (exc.__context__ is not None and not exc.__suppress_context__
          and id(exc.__context__) not in seen):
        lines += _trace(exc.__context__, exc.__context__.__traceback__, seen)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if tb is not None:
        lines.append("Traceback (most recent call last):\n")
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename != __file__:  # the harness's frames (a solution's stand-in) say nothing
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            if text := linecache.getline(code.co_filename, tb.tb_lineno).strip():
                lines.append(f"    {text}\n")
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):  # its own lines say where: rare enough for the full format
        return lines + traceback.format_exception_only(type(exc), exc)
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    try:
        text = str(exc)
    except BaseException:
        text = "<exception str() failed>"
    lines.append(f"{name}: {text}\n" if text else f"{name}\n")
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        lines += [f"{note}\n" for note in notes if isinstance(note, str)]
    return lines


def _drop_capabilities() -> None:
    """Empty bounding, ambient, effective, permitted and inheritable capability sets."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = struct.pack("<Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    _check(_libc.capset(header, bytes(24)), "capset")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _collect(st: _WorkerState, zygote: socket.socket, child: int, started: float, out_r: int,
             err_r: int, chan_r: int, digest: bytes) -> tuple:
    """Gather output tails and the channel until the candidate exits or times out; decide."""
    bufs = {out_r: bytearray(), err_r: bytearray(), chan_r: bytearray()}
    caps = {out_r: st.output_bytes, err_r: st.output_bytes, chan_r: 64}
    pidfd = os.pidfd_open(child)
    poller = select.poll()
    for fd in (*bufs, pidfd):
        poller.register(fd, select.POLLIN)
    deadline = started + st.timeout
    timed_out = exited = False
    while not exited:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for fd, _ in poller.poll(left * 1000):
            if fd == pidfd:
                exited = True
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                poller.unregister(fd)
                continue
            _append(bufs[fd], data, caps[fd], keep_tail=fd != chan_r)
    if timed_out:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [])  # gone (a zombie until the zygote reaps it)
    os.close(pidfd)
    try:  # unreaped, its pid and group id are still its own
        os.killpg(child, signal.SIGKILL)  # its group's stragglers (matters without a PID namespace)
    except OSError:
        pass
    status = _ask(zygote, b"W" + struct.pack("<q", child))
    duration = time.monotonic() - started
    for fd, buf in bufs.items():  # what is left in the pipes
        os.set_blocking(fd, False)
        try:
            for _ in range(64):  # bounded: outside a PID namespace a straggler may keep writing
                if not (data := os.read(fd, 1 << 16)):
                    break
                _append(buf, data, caps[fd], keep_tail=fd != chan_r)
        except BlockingIOError:
            pass
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    chan = bytes(bufs[chan_r])
    if not chan.startswith(_READY):
        verdict = "error"  # the lock-down failed before any candidate code ran
    elif timed_out:
        verdict = "timeout"
    elif exit_code == 0 and hmac.compare_digest(hashlib.sha256(chan[1:]).digest(), digest):
        verdict = "passed"
    else:
        verdict = "failed"
    return (verdict, exit_code, sig, duration, bytes(bufs[out_r]), bytes(bufs[err_r]))


def _append(buf: bytearray, data: bytes, cap: int, keep_tail: bool) -> None:
    """Output keeps its tail, the channel its head."""
    buf += data
    if len(buf) > cap:
        if keep_tail:
            del buf[:len(buf) - cap]
        else:
            del buf[cap:]


def _worker_main() -> None:
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0), os.dup2(devnull, 1)
    os.close(devnull)
    conf = _recv(proto_in)  # the worker ends when the caller closes the pipe (or dies)
    if conf is None:
        return
    os.umask(0o022)
    try:  # its candidates inherit the core: see the module's docstring
        os.sched_setaffinity(0, {conf["cpu"]})
    except OSError:  # a CPU the caller's set no longer holds: unpinned, only slower
        pass
    missing: list[str] = []
    pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)  # before /proc is hidden
    cgroups, cgroup_procs = [], []
    try:  # before the filesystem goes read-only: a file open for writing would block that
        cgroups, cgroup_procs = _candidate_cgroups(  # unique: uids are reserved host-wide
            f"codemill-sandbox-{conf['uid']}-{os.urandom(4).hex()}", conf["memory_bytes"], conf["max_processes"])
    except OSError:
        missing.append("cgroup")
    try:
        _private_filesystem()
    except OSError:
        missing.append("mount")
    try:  # per worker: a fresh one per candidate cost a quarter of the throughput
        _unshare(CLONE_NEWNET)
    except OSError:
        missing.append("net")
    missing += _missing_child_layers(conf["uid"], pid_ns)
    for name in _WARM_MODULES:
        __import__(name)
    gc.freeze()  # keep the collector from touching (and so copying) inherited pages
    st = _WorkerState(conf, tuple(missing), pid_ns, cgroup_procs)
    requests, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = os.fork()
    if zygote == 0:  # forked before any job arrives
        try:
            os.close(proto_in), os.close(proto_out), requests.close()
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # Once, here: every candidate inherits both with its fork (setuid binaries grant
            # nothing; the filter needs no_new_privs where the zygote lacks CAP_SYS_ADMIN).
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            if st.seccomp is not None:
                _install_seccomp(st.seccomp)
            _zygote(st, zygote_end)
        finally:
            os._exit(0)
    zygote_end.close()
    _send(proto_out, (missing, cgroups))
    while (job := _recv(proto_in)) is not None:
        job_id, solution, tests = job
        try:
            result = _run_job(st, requests, solution, tests)
        except _ZygoteGone:
            break  # the caller sees this worker end and re-runs its jobs elsewhere
        except Exception as exc:  # e.g. fork refused: the sandbox failed, not the candidate
            result = ("error", None, None, 0.0, b"", f"sandbox: {exc!r}".encode())
        _send(proto_out, (job_id, *result))
    requests.close()  # the zygote's cue to exit; reaped, its and the candidates' CPU time
    os.waitpid(zygote, 0)  # count towards this worker's (and so the caller's) children
    if "mount" in st.missing:  # a directory on the host's /tmp, not a private tmpfs
        import shutil

        shutil.rmtree(st.scratch_root, ignore_errors=True)


if __name__ == "__main__":
    _worker_main()
