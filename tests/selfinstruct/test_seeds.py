"""Seed tasks: mined from documented functions (a module written by the test and the real
standard library), and read from JSONL with errors that name the file and line."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from codemill.cli import main
from codemill.errors import InputError
from codemill.selfinstruct.seeds import doctest_tasks, read_seed_tasks

MODULE = '''
import math
from collections import Counter as Tally

LIMIT = 10


def hypotenuse(a, b):
    """Length of the long side of a right triangle with legs a and b.

    >>> hypotenuse(3, 4)   # the classic one
    5.0
    >>> hypotenuse(5, 12)
    13.0
    >>> [hypotenuse(1, 1)]
    [1.4142135623730951]
    >>> hypotenuse(0, 0) if True else None
    0.0
    >>> print(hypotenuse(6, 8))
    10.0
    >>> hypotenuse
    <function hypotenuse at 0x7f>
    """
    return math.sqrt(a * a + b * b)


def most_common_letter(text):
    """The letter that occurs most often in text (the first of equals).

    >>> most_common_letter("banana")
    'a'
    >>> most_common_letter("xyzzy")
    'y'
    """
    return Tally(c for c in text if c.isalpha()).most_common(1)[0][0]


def capped(x):
    """x, but never more than the module's LIMIT, whatever it is.

    >>> capped(3)
    3
    >>> capped(30)
    10
    """
    return min(x, LIMIT)


def one_example(x):
    """Doubles x, shown with a single example only.

    >>> one_example(2)
    4
    """
    return 2 * x


@staticmethod
def decorated(x):
    """Decorated functions are left out, examples or not.

    >>> decorated(1)
    1
    >>> decorated(2)
    2
    """
    return x
'''


@pytest.fixture
def documented(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "tests").mkdir(parents=True)
    (root / "geometry.py").write_text(MODULE)
    (root / "tests" / "test_geometry.py").write_text(MODULE)  # test folders hold no tasks
    (root / "latin1.py").write_bytes(b"# \xe9\n" + MODULE.encode())  # not UTF-8: skipped
    return root


def _passes(task: dict) -> bool:
    scope: dict = {}
    exec(task["solution"] + "\n" + "\n".join(task["tests"]), scope)
    return True


def test_documented_functions_become_tasks_with_their_examples_as_tests(documented):
    tasks = list(doctest_tasks([documented]))
    assert [t["id"] for t in tasks] == ["geometry.py:8:hypotenuse", "geometry.py:27:most_common_letter"]
    hyp, letter = tasks
    # calls of the function with literal results; a comment after the call is not part of it;
    # printed output and reprs that are not literals are no tests
    assert hyp["tests"] == ["assert hypotenuse(3, 4) == 5.0", "assert hypotenuse(5, 12) == 13.0",
                            "assert [hypotenuse(1, 1)] == [1.4142135623730951]",
                            "assert (hypotenuse(0, 0) if True else None) == 0.0"]
    assert hyp["question"] == ("Write a Python function `hypotenuse(a, b)`.\n\n"
                               "Length of the long side of a right triangle with legs a and b.")
    # the reference solution carries the module imports it uses, and only those
    assert hyp["solution"].startswith("import math\ndef hypotenuse(a, b):\n")
    assert letter["solution"].startswith("from collections import Counter as Tally\ndef most_common_letter")
    assert hyp["topic"] == "doctest"
    assert all(_passes(t) for t in tasks)
    assert list(doctest_tasks([documented], min_tests=3)) == [hyp]
    assert list(doctest_tasks([documented / "geometry.py"]))[0]["id"] == "geometry.py:8:hypotenuse"


def test_the_standard_library_yields_tasks_whose_references_pass_their_tests():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tasks = list(doctest_tasks([stdlib / "difflib.py"]))
    assert [t["id"].split(":")[-1] for t in tasks] == ["IS_LINE_JUNK", "IS_CHARACTER_JUNK"]
    assert tasks[1]["tests"][0] == "assert IS_CHARACTER_JUNK(' ') == True"
    assert all(_passes(t) for t in tasks)


def test_seeds_command_writes_the_mined_tasks(documented, tmp_path, capsys):
    out = tmp_path / "seeds.jsonl"
    assert main(["seeds", str(documented), "--limit", "1", "--out", str(out)]) == 0
    assert "1 seed tasks" in capsys.readouterr().out
    written = read_seed_tasks(out)
    assert [t["id"] for t in written] == ["geometry.py:8:hypotenuse"]
    assert main(["seeds", str(documented), "--limit", "0", "--out", str(out)]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["seeds", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


GOOD = {"question": "Write a function twice(x) that doubles x.",
        "tests": ["assert twice(1) == 2", "assert twice(0) == 0"]}


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not JSON"),
    (json.dumps(["a list"]), "a seed task is a JSON object, not list"),
    (json.dumps({**GOOD, "question": " "}), "`question` must be non-empty text"),
    (json.dumps({**GOOD, "tests": []}), "`tests` must be a non-empty list"),
    (json.dumps({**GOOD, "tests": ["twice(1) == 2"]}), "not one assert statement: 'twice(1) == 2'"),
    (json.dumps({**GOOD, "solution": "def twice(x) return 2 * x"}), "`solution` is not valid Python"),
    (json.dumps({**GOOD, "solution": "x = 2"}), "`solution` must be code that defines a function"),
    (json.dumps({**GOOD, "id": "1"}), "id '1' is used twice"),
])
def test_a_bad_seed_task_is_named_by_file_and_line(tmp_path, line, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(InputError) as err:
        read_seed_tasks(path)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)


def test_a_missing_or_undecodable_seed_file_is_named(tmp_path):
    with pytest.raises(InputError, match="missing.jsonl: cannot read the seed tasks"):
        read_seed_tasks(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n\xe9\n")
    with pytest.raises(InputError, match="latin1.jsonl:2: not UTF-8"):
        read_seed_tasks(tmp_path / "latin1.jsonl")


def test_seed_tasks_read_with_defaults(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "mine", "topic": "maths",
                                                          "solution": "def twice(x):\n    return 2 * x\n"}) + "\n")
    first, second = read_seed_tasks(path)
    assert first == {"id": "1", "topic": "seed", **GOOD}
    assert (second["id"], second["topic"], second["solution"]) == ("mine", "maths", "def twice(x):\n    return 2 * x\n")
