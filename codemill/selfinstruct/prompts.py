"""Prompt templates of the self-instruct pipeline, in Llama 2's chat format.

A conversation is a run of exchanges `<s>[INST] user [/INST] answer </s>`; the
system prompt sits inside the first user turn between `<<SYS>>` and `<</SYS>>`,
and a prompt ends with an open `[/INST]` for the model to answer. The wording is
our own. Changing any text here changes what the models see: bump
PROMPT_VERSION, which is recorded with every example and fingerprints the stages.
"""

from __future__ import annotations

from collections.abc import Sequence

PROMPT_VERSION = "codemill-selfinstruct-1"

BOS, EOS = "<s>", "</s>"
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
TESTS_OPEN, TESTS_CLOSE = "[TESTS]", "[/TESTS]"
CODE_OPEN, CODE_CLOSE = "[PYTHON]", "[/PYTHON]"


def chat(turns: Sequence[tuple[str, str | None]], system: str | None = None) -> str:
    """Render (user, answer) exchanges; only the last answer may be None (the open turn)."""
    parts = []
    for i, (user, answer) in enumerate(turns):
        if answer is None and i != len(turns) - 1:
            raise ValueError("only the last turn may be left for the model to answer")
        if i == 0 and system:
            user = f"{B_SYS}{system.strip()}{E_SYS}{user.strip()}"
        text = f"{BOS}{B_INST} {user.strip()} {E_INST}"
        if answer is not None:
            text += f" {answer.strip()} {EOS}"
        parts.append(text)
    return "".join(parts)


# --- questions ---------------------------------------------------------------------------

QUESTION_SYSTEM = (
    "You write programming interview questions. Each question describes one task that a "
    "single self-contained Python function can solve with nothing but the standard library."
)


def question_prompt(topic: str, count: int) -> str:
    user = (
        f"Write {count} different interview questions about {topic}. Every question must ask "
        "for one Python function, say what the function receives and what it returns, and be "
        "answerable without third-party packages, files, network access or user input. Give "
        "no solutions, hints or examples. Answer with a numbered list from 1 to "
        f"{count}, one question per item."
    )
    return chat([(user, None)], QUESTION_SYSTEM)


# --- unit tests (one-shot) -------------------------------------------------------------

TESTS_SYSTEM = "You write unit tests for Python functions as plain assert statements."

_EXAMPLE_QUESTION = (
    "Write a function that receives a list of integers and returns the length of the longest "
    "run of equal adjacent values. An empty list has no run, so the answer for it is 0."
)
_EXAMPLE_TESTS = (
    "assert longest_run([]) == 0",
    "assert longest_run([7]) == 1",
    "assert longest_run([1, 1, 2, 2, 2, 3]) == 3",
    "assert longest_run([4, 4, 4, 4]) == 4",
    "assert longest_run([1, 2, 1, 2]) == 1",
)


def _tests_request(question: str, count: int) -> str:
    return (
        f"Write {count} tests for a Python function that solves the task below. Each test is "
        "one line, `assert <call> == <expected value>`, with a correct expected value. Pick a "
        "fitting name for the function and call it in every test. Put the tests between "
        f"{TESTS_OPEN} and {TESTS_CLOSE} and nothing else inside those tags.\n\n"
        f"Task: {question.strip()}"
    )


def tests_block(tests: Sequence[str]) -> str:
    return "\n".join([TESTS_OPEN, *tests, TESTS_CLOSE])


def tests_prompt(question: str, count: int = 5) -> str:
    shown = _EXAMPLE_TESTS[:count]
    return chat([(_tests_request(_EXAMPLE_QUESTION, len(shown)), tests_block(shown)),
                 (_tests_request(question, count), None)], TESTS_SYSTEM)


# --- solutions ---------------------------------------------------------------------------

SOLUTION_SYSTEM = "You are an expert Python programmer who writes correct, self-contained code."


def solution_prompt(question: str, shown_test: str) -> str:
    """The question and ONE of its tests, so that the model learns the function's name and
    signature; the other tests stay hidden and judge the solution."""
    user = (
        f"{question.strip()}\n\nYour function must pass this test:\n{shown_test.strip()}\n\n"
        f"Write the complete function, with the imports it needs, between {CODE_OPEN} and "
        f"{CODE_CLOSE}. Add no tests, usage examples or explanations."
    )
    return chat([(user, None)], SOLUTION_SYSTEM)


# --- instruction tuning ------------------------------------------------------------------

def instruction_turn(question: str, solution: str) -> tuple[str, str]:
    """An instruction-tuning example as (prompt, answer) texts without BOS and EOS, for a
    tokenizer to wrap in its own BOS/EOS ids: `[INST] q [/INST]` and ` [PYTHON]…[/PYTHON]`."""
    return (f"{B_INST} {question.strip()} {E_INST}",
            f" {CODE_OPEN}\n{solution.strip()}\n{CODE_CLOSE}")


def instruction_text(question: str, solution: str) -> tuple[str, str]:
    """The same example as chat text: prompt `<s>[INST] q [/INST]`, completion `… </s>`;
    prompt + completion == chat([(q, answer)])."""
    prompt, answer = instruction_turn(question, solution)
    return f"{BOS}{prompt}", f"{answer} {EOS}"
