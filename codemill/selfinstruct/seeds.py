"""Seed tasks: questions that arrive with their tests (and maybe a reference solution)
instead of being written by the models.

A seed file is JSONL, one task per line: `question` (text), `tests` (assert statements,
the first shown to the solution prompt, the rest hidden) and optionally `solution` (code
defining the function), `id` and `topic`. Seeds go through dedup and decontamination like
generated questions, skip the tests stage, get the code model's solutions, and their
reference solution (when given) is tried last, in the same sandbox; nothing is kept that
did not pass there.

`doctest_tasks` mines such tasks from documented code: a top-level function whose
docstring shows calls of it with literal results becomes a question (its signature and
docstring prose), tests (those calls as asserts) and a reference solution (its source
with the module imports it uses).
"""

from __future__ import annotations

import ast
import builtins
import doctest
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from codemill.errors import InputError
from codemill.selfinstruct.parse import defines_function

Record = dict[str, Any]

# Folders below a mined root that hold other projects or test suites, not documented code.
SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})
_BUILTINS = frozenset(dir(builtins))


def _is_assert(test: str) -> bool:
    try:
        body = ast.parse(test).body
    except SyntaxError:
        return False
    return len(body) == 1 and isinstance(body[0], ast.Assert)


def _seed(raw: Any, where: str) -> Record:
    """One task checked: the error names the file and line and says what is wrong."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: a seed task is a JSON object, not {type(raw).__name__}")
    question, tests, solution = raw.get("question"), raw.get("tests"), raw.get("solution")
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"{where}: `question` must be non-empty text")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise InputError(f"{where}: `tests` must be a non-empty list of assert statements")
    if bad := [t for t in tests if not _is_assert(t)]:
        raise InputError(f"{where}: not one assert statement: {bad[0][:80]!r}")
    if solution is not None:
        try:
            defines = isinstance(solution, str) and defines_function(ast.parse(solution))
        except SyntaxError as exc:
            raise InputError(f"{where}: `solution` is not valid Python ({exc.msg}, line {exc.lineno})") from None
        if not defines:
            raise InputError(f"{where}: `solution` must be code that defines a function")
    return {"id": str(raw.get("id") or where), "question": question.strip(), "tests": list(tests),
            "topic": str(raw.get("topic") or "seed"),
            **({"solution": solution} if solution is not None else {})}


def read_seed_tasks(path: str | os.PathLike) -> list[Record]:
    """The tasks of a seed file, each checked; an id defaults to the line number."""
    tasks, seen = [], set()
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the seed tasks ({exc.strerror})") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                raw = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"{where}: not UTF-8") from None
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON ({exc.msg})") from None
            task = _seed(raw, where)
            if task["id"] == where:
                task["id"] = str(number)
            if task["id"] in seen:
                raise InputError(f"{where}: id {task['id']!r} is used twice")
            seen.add(task["id"])
            tasks.append(task)
    return tasks


# --- mining documented functions -------------------------------------------------------------

def _free_names(func: ast.FunctionDef) -> set[str]:
    """Names the function reads that neither it nor the builtins bind."""
    bound = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    loads = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
            if not isinstance(node, ast.ClassDef):
                bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            loads.update(node.names)  # module state: not self-contained
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loads - bound - _BUILTINS


def _module_imports(tree: ast.Module) -> dict[str, str]:
    """Name -> the import statement (one line) that binds it at module level."""
    imports = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports[(alias.asname or alias.name).split(".")[0]] = ast.unparse(ast.Import([alias]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    imports[alias.asname or alias.name] = ast.unparse(
                        ast.ImportFrom(node.module, [alias], 0))
    return imports


def _asserts(func: ast.FunctionDef, doc: str) -> list[str]:
    """The docstring's examples that call the function and show a literal result."""
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # inconsistent indentation in the docstring
        return []
    tests = []
    for example in examples:
        source, want = example.source.strip(), example.want.strip()
        try:
            call, result = ast.parse(source, mode="eval"), ast.parse(want, mode="eval")
            ast.literal_eval(result)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        called = {n.func.id for n in ast.walk(call) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if func.name in called and "print" not in called:  # printed output is no value
            # built as a tree: a comment after the call would swallow the expected value
            # as text, and `a if c else b == x` would compare b alone
            test = ast.unparse(ast.Assert(ast.Compare(call.body, [ast.Eq()], [result.body])))
            if test not in tests:
                tests.append(test)
    return tests


def _prose(doc: str) -> str:
    """The docstring up to its first example, without a trailing "Examples:" heading."""
    lines = []
    for line in doc.splitlines():
        if line.lstrip().startswith(">>>"):
            break
        lines.append(line)
    while lines and (not lines[-1].strip() or lines[-1].rstrip().endswith(":")
                     or set(lines[-1].strip()) <= set("-=")):
        lines.pop()
    return "\n".join(lines).strip()


def _task(rel: str, source: str, tree: ast.Module, func: ast.FunctionDef,
          min_tests: int) -> Record | None:
    doc = ast.get_docstring(func)
    if func.decorator_list or not doc or ">>>" not in doc:
        return None
    tests = _asserts(func, doc)
    prose = _prose(doc)
    if len(tests) < min_tests or len(prose) < 20:
        return None
    imports = _module_imports(tree)
    free = _free_names(func)
    if not free <= imports.keys():
        return None  # needs module state or helpers: not a self-contained task
    code = ast.get_source_segment(source, func)
    if code is None:
        return None
    solution = "".join(imports[name] + "\n" for name in sorted(free)) + code + "\n"
    signature = f"{func.name}({ast.unparse(func.args)})"
    return {"id": f"{rel}:{func.lineno}:{func.name}", "topic": "doctest",
            "question": f"Write a Python function `{signature}`.\n\n{prose}",
            "tests": tests, "solution": solution}


def _python_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        yield from (Path(folder) / f for f in sorted(files) if f.endswith(".py"))


def doctest_tasks(roots: Sequence[str | os.PathLike], min_tests: int = 2) -> Iterator[Record]:
    """Seed tasks from the documented functions under `roots`, in path order. Files that
    are not UTF-8 Python are skipped: they hold no task."""
    for root in map(Path, roots):
        if not root.exists():
            raise InputError(f"{root}: no such file or folder")
        for path in _python_files(root):
            try:
                source = path.read_text(encoding="utf-8")
                if ">>>" not in source:  # no examples: no need to parse it
                    continue
                tree = ast.parse(source)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                continue
            rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    task = _task(rel, source, tree, node, min_tests)
                    if task is not None:
                        yield task
