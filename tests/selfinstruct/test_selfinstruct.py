"""Self-instruct: prompts, parsers, model backends (a tiny random Llama loaded by path, an
HTTP server, two worker processes), the call cache, and the whole DAG with a scripted
model through the real sandbox."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from codemill.config import load_run_config
from codemill.errors import ConfigError
from codemill.selfinstruct.backends import (
    Backend,
    BackendError,
    BackendUnavailable,
    CachedBackend,
    HTTPBackend,
    TransformersBackend,
    VLLMBackend,
    make_backend,
    prompt_ids,
)
from codemill.selfinstruct.config import ModelBackendConfig, SamplingSettings
from codemill.selfinstruct.parse import ParseStats, parse_questions, parse_solution, parse_tests
from codemill.selfinstruct.pipeline import read_jsonl, select_solutions
from codemill.selfinstruct.prompts import PROMPT_VERSION, chat, instruction_text, question_prompt, solution_prompt
from codemill.selfinstruct.prompts import tests_prompt as unit_tests_prompt  # not a pytest test

from support import output_dir

ROOT = Path(__file__).resolve().parents[2]

# --- prompts ----------------------------------------------------------------------------


def test_prompts_use_llama2_chat_format():
    q = question_prompt("sorting", 7)
    assert q.startswith("<s>[INST] <<SYS>>\n") and q.endswith(" [/INST]")
    assert "\n<</SYS>>\n\n" in q and "Write 7 different interview questions about sorting" in q
    assert q.count("[INST]") == 1

    t = unit_tests_prompt("Write a function that doubles a number.")
    first, second = t.split("</s>")
    answer = first.split("[/INST]")[1]  # the one-shot example's answer: five asserts in tags
    assert answer.startswith(" [TESTS]\nassert ") and answer.endswith("\n[/TESTS] ")
    assert answer.count("\nassert ") == 5
    assert second.startswith("<s>[INST] ") and second.endswith("Task: Write a function that doubles a number. [/INST]")
    assert "<<SYS>>" not in second  # the system prompt sits in the first turn only

    tests = ["assert double(2) == 4", "assert double(0) == 0", "assert double(-3) == -6"]
    s = solution_prompt("Write a function that doubles a number.", tests[0])
    assert tests[0] in s and tests[1] not in s and tests[2] not in s  # one shown, the rest hidden
    assert "[PYTHON]" in s and "[/PYTHON]" in s and s.endswith("[/INST]")

    prompt, completion = instruction_text("Double a number.", "def double(x):\n    return 2 * x\n")
    assert prompt == "<s>[INST] Double a number. [/INST]"
    assert completion == " [PYTHON]\ndef double(x):\n    return 2 * x\n[/PYTHON] </s>"
    assert prompt + completion == chat([("Double a number.", completion[1:-5])])
    assert PROMPT_VERSION
    with pytest.raises(ValueError):
        chat([("a", None), ("b", None)])


# --- parsers ----------------------------------------------------------------------------


def test_question_parser_survives_prose_bad_numbering_and_markup():
    stats = ParseStats()
    text = ("Sure! Here are some questions:\n\n**1.** Write a function that merges two sorted lists.\n"
            "3) Write a function that returns the median of a list\n   of numbers, or None when it is empty.\n"
            "Question 3: Write a function that checks whether a year is a leap year.\n"
            "2. Ok\n\nI hope these help!")
    assert parse_questions(text, stats) == [
        "Write a function that merges two sorted lists.",
        "Write a function that returns the median of a list of numbers, or None when it is empty.",
        "Write a function that checks whether a year is a leap year.",
    ]
    assert stats.parsed == 3 and stats.failed == {"too_short": 1}
    assert stats.repaired["prose_dropped"] == 1 and stats.repaired["broken_numbering"] == 1

    bullets = ("- Write a function that flattens a nested list of integers.\n"
               "- Write a function that rotates a list by k places.")
    assert len(parse_questions(bullets, stats)) == 2
    numbered_with_points = ("1. Write a function that parses a date string. It must handle:\n"
                            "- the ISO format\n- the US format\n2. Write a function that sums digits of an int.")
    assert len(parse_questions(numbered_with_points, stats)) == 2  # bullets are sub-points here
    assert parse_questions("I cannot think of any questions.", stats) == []
    assert parse_questions("1. Write a function that adds two numbers together. [INST] more [/INST] 2. x",
                           stats) == ["Write a function that adds two numbers together."]
    assert stats.failed["no_list"] == 1 and stats.repaired["continued_past_turn"] == 1


def test_tests_parser_survives_doubled_missing_tags_numbering_and_fences():
    stats = ParseStats()
    doubled = ("Here are the tests.\n[TESTS]\n[TESTS]\n```python\n1. assert f(1) == 2\n# test 2\n"
               "assert f(2) == 3\nassert f(2)   ==   3\nassert True\n```\n[/TESTS]\n[/TESTS] done")
    assert parse_tests(doubled, stats) == ["assert f(1) == 2", "assert f(2) == 3"]
    assert stats.repaired["doubled_tag"] == 1 and stats.repaired["code_fence"] == 1
    assert stats.repaired["line_by_line"] == 1 and stats.failed["assert_without_call"] == 1

    unclosed = "[tests]\nassert g([1, 2]) == [2, 1]\nassert g(\n    [],\n) == []\n"
    assert parse_tests(unclosed, stats) == ["assert g([1, 2]) == [2, 1]", "assert g([]) == []"]
    assert stats.repaired["missing_close_tag"] == 1

    untagged = "assert h('a') == 'A'\nassert h('b') == 'B'\nassert h('c') == 'C'\nassert h('d') == 'D'\n" \
               "assert h('e') == 'E'\nassert h('f') == 'F'"
    assert len(parse_tests(untagged, stats, max_tests=5)) == 5
    assert stats.repaired["no_tags"] == 1
    broken = "[TESTS]\nassert f(1 == 2\nassert f(3) == 4\n[/TESTS]"
    assert parse_tests(broken, stats) == ["assert f(3) == 4"]
    assert stats.failed["broken_assert"] == 1
    assert parse_tests("I do not know.", stats) == []
    assert stats.failed["no_asserts"] == 1


def test_solution_parser_survives_tag_and_fence_defects():
    stats = ParseStats()
    code = "def f(x):\n    return x + 1\n"
    assert parse_solution(f"[PYTHON]\n{code}[/PYTHON]", stats) == code
    assert parse_solution(f"Sure.\n[PYTHON]\n[PYTHON]\n{code}[/PYTHON] Explanation: ...", stats) == code
    assert parse_solution(f"[PYTHON]\n```python\n{code}```\n", stats) == code  # fence, no close tag
    assert parse_solution(f"Here:\n```py\n{code}```\nThat is it.", stats) == code
    assert parse_solution(f"{code}[/PYTHON]", stats) == code
    assert parse_solution(f"[PYTHON]\n    {code.replace(chr(10), chr(10) + '    ')}[/PYTHON]", stats) == code
    assert parse_solution(code + "</s>[INST] again", stats) == code
    assert stats.parsed == 7
    assert stats.repaired == {"doubled_tag": 1, "code_fence": 1, "missing_close_tag": 1,
                              "fence_without_tags": 1, "missing_open_tag": 1, "no_tags": 1,
                              "continued_past_turn": 1}
    assert parse_solution("[PYTHON]\ndef f(x) return x\n[/PYTHON]", stats) is None
    assert parse_solution("[PYTHON]\nx = 1\n[/PYTHON]", stats) is None
    assert parse_solution("I would rather not.", stats) is None
    assert stats.failed == {"syntax_error": 2, "no_function": 1}


# --- the call cache -----------------------------------------------------------------------


class CountingModel(Backend):
    """Deterministic completions; records the prompts it generated; may fail on a call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.prompts: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> list[list[str]]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise BackendError("the model crashed")
        self.prompts += prompts
        return [[f"{p}/{j}/{sampling.seed}" for j in range(sampling.n)] for p in prompts]


def test_cache_resumes_after_a_crash_and_a_rerun_makes_no_model_call(tmp_path):
    sampling = SamplingSettings(n=2, seed=5)
    prompts = [f"p{i}" for i in range(7)] + ["p0"]
    crashing = CachedBackend(CountingModel(fail_on_call=3), {"model": "m"}, tmp_path, chunk=2)
    with pytest.raises(BackendError, match="crashed"):
        crashing.generate(prompts, sampling)
    assert crashing.inner.prompts == ["p0", "p1", "p2", "p3"]  # two calls stored, then the crash
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left behind

    resumed = CachedBackend(CountingModel(), {"model": "m"}, tmp_path, chunk=2)
    out = resumed.generate(prompts, sampling)
    assert resumed.inner.prompts == ["p4", "p5", "p6"]  # only what the crash lost
    assert resumed.stats() == {"hits": 5, "misses": 3, "model_calls": 2}
    assert out[0] == ["p0/0/5", "p0/1/5"] and out[7] == out[0] and out[6] == ["p6/0/5", "p6/1/5"]

    again = CachedBackend(CountingModel(), {"model": "m"}, tmp_path, chunk=2)
    assert again.generate(prompts, sampling) == out
    assert again.inner.calls == 0 and again.stats() == {"hits": 8, "misses": 0, "model_calls": 0}

    # every part of the key matters: the seed, the other sampling settings, the model
    for other, identity in ((dataclasses.replace(sampling, seed=6), {"model": "m"}),
                            (dataclasses.replace(sampling, temperature=0.5), {"model": "m"}),
                            (sampling, {"model": "m", "digest": "other weights"})):
        fresh = CachedBackend(CountingModel(), identity, tmp_path)
        fresh.generate(prompts[:1], other)
        assert fresh.inner.calls == 1


# --- a tiny random Llama, saved and loaded by path -----------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = (ROOT / "codemill/selfinstruct/prompts.py").read_text()
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("split_special_tokens", [False, True])
def test_a_leading_bos_string_becomes_the_bos_id_whatever_the_tokenizer_makes_of_its_text(
        tiny_llama, split_special_tokens):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, split_special_tokens=split_special_tokens)
    ids = prompt_ids(tokenizer, "<s>[INST] sort a list [/INST]")
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[1:] == tokenizer.encode("[INST] sort a list [/INST]", add_special_tokens=False)
    assert prompt_ids(tokenizer, "def f():") == tokenizer.encode("def f():", add_special_tokens=False)


def test_transformers_backend_loads_a_local_model_and_samples_n_per_prompt(tiny_llama):
    prompts = [chat([("Write a function that adds two numbers.", None)]),
               "<s>[INST] sort a list [/INST]", "<s>[INST] reverse a string [/INST]"]
    sampling = SamplingSettings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1)
    with TransformersBackend(str(tiny_llama), device="cpu", batch_size=2) as backend:
        out = backend.generate(prompts, sampling)  # two batches: 2 prompts, then 1
        assert [len(samples) for samples in out] == [3, 3, 3]
        assert all(isinstance(t, str) for samples in out for t in samples)
        assert len(set(out[0])) > 1  # n independent samples, not one repeated
        assert backend.generate(prompts, sampling) == out  # seeded
        assert backend.generate(prompts, dataclasses.replace(sampling, seed=2)) != out
        greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=6)
        assert backend.generate(prompts[:1], greedy) == backend.generate(prompts[:1], greedy)
    with pytest.raises(ConfigError, match="local model directory"):
        TransformersBackend(str(tiny_llama / "missing"))


class EchoDevices(Backend):
    """Replies with its process, the prompt and the devices it was given."""

    def __init__(self, cfg: ModelBackendConfig) -> None:
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES") or "<none>"

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> list[list[str]]:
        return [[f"{os.getpid()} {p} {self.visible}"] * sampling.n for p in prompts]


def test_data_parallel_launcher_splits_prompts_across_two_cpu_workers():
    echo = ModelBackendConfig(backend="test_selfinstruct:EchoDevices", devices=["cpu", "7"])
    with make_backend(echo) as parallel:
        assert len(set(parallel.pids)) == 2 and os.getpid() not in parallel.pids
        replies = parallel.generate(["a", "b", "c"], SamplingSettings(n=2))
        assert parallel.generate([], SamplingSettings()) == []
    pids, asked, visible = zip(*(r[0].split() for r in replies))
    assert asked == ("a", "b", "c") and all(r[0] == r[1] for r in replies)  # in order, n each
    assert pids[0] == pids[1] != pids[2] and set(pids) == {str(p) for p in parallel.pids}
    assert visible == ("<none>", "<none>", "7")  # each worker sees only its own devices
    with pytest.raises(BackendError, match="failed"):
        make_backend(dataclasses.replace(echo, backend="test_selfinstruct:no_such_factory"))


def test_vllm_backend_says_clearly_that_vllm_is_missing(tmp_path):
    if importlib.util.find_spec("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(BackendUnavailable, match="needs the `vllm` package"):
        VLLMBackend(str(tmp_path))


# --- an OpenAI-compatible server, answering like `vllm serve` ---------------------------------


class _Completions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if body["model"] != "tiny":
            return self._reply(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
        n = body["n"]
        choices = [{"index": i * n + j, "text": f"{p[-4:]}#{j}#{body['seed']}", "finish_reason": "length",
                    "logprobs": None} for i, p in enumerate(body["prompt"]) for j in range(n)]
        self._reply(200, {"id": "cmpl-0", "object": "text_completion", "created": 0, "model": "tiny",
                          "choices": choices[::-1],  # order is the index's job, not the list's
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def completions_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completions)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_backend_against_a_local_completions_server(completions_server):
    url = f"http://127.0.0.1:{completions_server.server_port}"
    backend = HTTPBackend(url, "tiny", batch_size=2)
    out = backend.generate(["aaaa1", "bbbb2", "cccc3"], SamplingSettings(n=2, seed=9, max_new_tokens=7))
    assert out == [["aaa1#0#9", "aaa1#1#9"], ["bbb2#0#9", "bbb2#1#9"], ["ccc3#0#9", "ccc3#1#9"]]
    paths = [p for p, _ in completions_server.requests]
    bodies = [b for _, b in completions_server.requests]
    assert paths == ["/v1/completions"] * 2 and [b["prompt"] for b in bodies] == [["aaaa1", "bbbb2"], ["cccc3"]]
    assert bodies[0]["n"] == 2 and bodies[0]["max_tokens"] == 7 and bodies[0]["add_special_tokens"] is False
    with pytest.raises(BackendError, match="HTTP 404.*does not exist"):
        HTTPBackend(url + "/v1/", "other").generate(["x"], SamplingSettings())


# --- config ---------------------------------------------------------------------------------


def test_selfinstruct_config_loads_from_toml_with_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(f'out = "{tmp_path}/out"\n[selfinstruct.code_model]\npath = "/models/code"\n'
                    '[selfinstruct.question_model]\nbackend = "http"\nurl = "http://127.0.0.1:8000"\n'
                    'served_name = "big"\n[selfinstruct.solutions.sampling]\nn = 10\nstop = ["[/PYTHON]"]\n')
    run = load_run_config(path, ['selfinstruct.code_model.devices=["0", "1"]'])
    si = run.selfinstruct
    assert run.out == f"{tmp_path}/out" and si.code_model.devices == ["0", "1"]
    assert si.solutions.sampling == SamplingSettings(n=10, stop=("[/PYTHON]",))
    assert si.questions.rounds * len(si.questions.topics) * si.questions.sampling.n * \
        si.questions.per_completion == 60_000  # the paper's scale, about 62k
    with pytest.raises(ConfigError, match="selfinstruct.solutions.sampling.temperature: greedy"):
        load_run_config(path, ["selfinstruct.solutions.sampling.temperature=0"])
    with pytest.raises(ConfigError, match="selfinstruct.solutions.temperature: unknown key"):
        load_run_config(path, ["selfinstruct.solutions.temperature=0.1"])


def test_select_keeps_the_first_passing_or_all_passing():
    records = [{"id": "q", "question": "Q?", "tests": ["assert f() == 1"], "topic": "t",
                "candidates": ["a", None, "c", "d"], "statuses": ["failed", "unparseable", "passed", "passed"]}]
    first = select_solutions(records, "first", {}).kept
    assert [(r["solution"], r["passing_index"], r["num_tried"], r["num_candidates"], r["num_passing"])
            for r in first] == [("c", 2, 3, 4, 2)]
    assert [r["passing_index"] for r in select_solutions(records, "all", {}).kept] == [2, 3]


# --- the DAG end to end, with a scripted model and the real sandbox ----------------------------

QUESTION_REPLIES = {
    "strings": [
        "Sure! Here are three questions:\n\n"
        "1. Write a function that reverses the letters of every word in a sentence while keeping the words in order.\n"
        "2. Write a function that counts the vowels in a string and returns the count.\n"
        "3) Write a function that returns True when a string reads the same backwards as forwards, ignoring case.\n\n"
        "I hope these help!",
        "1. write a function that COUNTS the vowels in a string, and returns the count!\n1. Hi",
        "I cannot think of any more questions.",
    ],
    "lists": [
        "**1.** Write a function that returns the sum of the squares of a list of integers.\n"
        "**2.** Write a function that takes a list of integers and returns a new list with only the even "
        "numbers, keeping their original order.\n"
        # HumanEval/0's docstring, nearly verbatim: contaminated
        "**3.** Check if in given list of numbers, are any two numbers closer to each other than given threshold.",
        "Question 1: Write a function that takes a list of integers and returns a new list with only the even "
        "numbers, keeping their original order intact.",
        "[INST] Write more questions [/INST]",
    ],
}
TEST_REPLIES = {
    "reverses the letters": "[TESTS]\nassert reverse_words('hello world') == 'olleh dlrow'\n"
                            "assert reverse_words('') == ''\nassert reverse_words('ab cd') == 'ba dc'\n[/TESTS]",
    "vowels": "[TESTS]\n[TESTS]\n```python\n1. assert count_vowels('hello') == 2\n# test 2\n"
              "assert count_vowels('') == 0\nassert count_vowels('AEIOU xyz') == 5\n```\n[/TESTS]",
    "backwards": "I am not sure how to test this.",
    "squares": "[TESTS]\nassert sum_of_squares([1, 2, 3]) == 14\nassert sum_of_squares([]) == 0\n"
               "assert sum_of_squares([-2]) == 4\n",
    "even numbers": "[TESTS]\nassert only_evens([1, 2, 3, 4]) == [2, 4]\nassert only_evens([]) == []\n"
                    "assert only_evens([8, 6, 3]) == [8, 6]\n[/TESTS]",
}
RIGHT_A = "[PYTHON]\ndef reverse_words(s):\n    return ' '.join(w[::-1] for w in s.split(' '))\n[/PYTHON]"
WRONG_A = "[PYTHON]\ndef reverse_words(s):\n    return s[::-1]\n[/PYTHON]"
SYNTAX = "Here you go: [PYTHON]\ndef reverse_words(s) return s\n[/PYTHON]"
WRONG_B = "[PYTHON]\ndef count_vowels(s):\n    return len(s)\n[/PYTHON]"
EXIT_B = "[PYTHON]\nimport sys\ndef count_vowels(s):\n    return 0\nsys.exit(0)\n[/PYTHON]"  # exit before the asserts
FENCED_D = "```python\ndef sum_of_squares(xs):\n    return sum(x * x for x in xs)\n```"
WRONG_D = "[PYTHON]\ndef sum_of_squares(xs):\n    return sum(xs) ** 2\n[/PYTHON]"
EXIT_E = "[PYTHON]\nimport os\ndef only_evens(xs):\n    return []\nos._exit(0)\n[/PYTHON]"
RIGHT_E = "[PYTHON]\ndef only_evens(xs):\n    return [x for x in xs if x % 2 == 0]\n[/PYTHON]"
DOUBLED_E = "[PYTHON]\n[PYTHON]\ndef only_evens(xs):\n    return [x for x in xs if not x % 2]\n"
SOLUTION_REPLIES = {  # ten per question
    "reverses the letters": [WRONG_A, SYNTAX, RIGHT_A, WRONG_A, RIGHT_A, RIGHT_A, SYNTAX, RIGHT_A, WRONG_A, RIGHT_A],
    "vowels": [WRONG_B, EXIT_B] * 5,
    "squares": [FENCED_D] + [WRONG_D] * 9,
    "even numbers": [EXIT_E, RIGHT_E] + [DOUBLED_E] * 8,
    # seed tasks'
    "limits x": ["[PYTHON]\ndef clamp(x, lo, hi):\n    return x\n[/PYTHON]"] * 10,
    "integer half": [SYNTAX, "[PYTHON]\ndef halve(n):\n    return n // 2\n[/PYTHON]"] * 5,
    "capital letters": [SYNTAX] * 10,
}
SEED_TASKS = [
    {"id": "clamp", "question": "Write a Python function `clamp(x, lo, hi)` that limits x to the range from lo to hi.",
     "tests": ["assert clamp(5, 0, 3) == 3", "assert clamp(-1, 0, 3) == 0", "assert clamp(2, 0, 3) == 2"],
     "solution": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"},
    {"id": "halve", "question": "Write a Python function `halve(n)` that returns the integer half of n, rounded down.",
     "tests": ["assert halve(7) == 3", "assert halve(-3) == -2"], "topic": "arithmetic"},
    {"id": "shout", "question": "Write a Python function `shout(s)` that returns s in capital letters and a `!`.",
     "tests": ["assert shout('hi') == 'HI!'", "assert shout('') == '!'"],
     "solution": "def shout(s):\n    return s.upper()\n"},  # wrong: the sandbox drops it
]


class Script:
    """What the scripted model was asked, and when it should crash."""

    prompts: Counter = Counter()  # stage -> prompts answered
    calls: Counter = Counter()  # stage -> generate calls
    crash: tuple[str, int] | None = None  # (stage, call number) that raises


class ScriptedModel(Backend):
    """A deterministic model: canned questions, tests and solutions, chosen by the prompt."""

    def __init__(self, cfg: ModelBackendConfig) -> None:
        pass

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> list[list[str]]:
        stage = ("questions" if "interview questions about" in prompts[0] else
                 "tests" if "Task:" in prompts[0] else "solutions")
        Script.calls[stage] += 1
        if Script.crash == (stage, Script.calls[stage]):
            raise BackendError(f"scripted crash in {stage}")
        Script.prompts[stage] += len(prompts)
        return [self._reply(stage, p, sampling.n) for p in prompts]

    def _reply(self, stage: str, prompt: str, n: int) -> list[str]:
        if stage == "questions":
            topic = next(t for t in QUESTION_REPLIES if f"questions about {t}." in prompt)
            return QUESTION_REPLIES[topic][:n]
        asked = prompt.rsplit("[INST]", 1)[1]  # the last turn: not the one-shot example
        table = TEST_REPLIES if stage == "tests" else SOLUTION_REPLIES
        reply = next(v for k, v in table.items() if k in asked)
        return [reply] * n if isinstance(reply, str) else reply[:n]


def _write_dag_config(tmp_path: Path, tokenizer: Path, seeds: Path | None = None) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f"""
out = "{tmp_path / 'out'}"
[luigi]
log_level = "WARNING"
[selfinstruct]
cache_chunk = 2
seed_tasks = "{seeds or ''}"
[selfinstruct.question_model]
backend = "test_selfinstruct:ScriptedModel"
[selfinstruct.code_model]
backend = "test_selfinstruct:ScriptedModel"
[selfinstruct.questions]
topics = ["strings", "lists"]
rounds = 1
per_completion = 3
sampling = {{ n = 3, temperature = 1.0 }}
[selfinstruct.sandbox]
workers = 2
timeout_s = 5.0
memory_bytes = 268435456
uid_base = 1600000000
[selfinstruct.output]
tokenizer = "{tokenizer}"
seq_len = 256
""")
    return path


@pytest.fixture
def sp_tokenizer(tmp_path) -> Path:
    from codemill.tokenize.tokenizer import train_tokenizer

    texts = [(ROOT / "codemill/selfinstruct" / name).read_text() for name in ("prompts.py", "parse.py")]
    return Path(train_tokenizer(texts, tmp_path / "tok" / "tiny", vocab_size=400, num_threads=1).path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's full isolation needs root")
def test_dag_end_to_end_with_a_scripted_model_and_the_real_sandbox(tmp_path, sp_tokenizer, capsys):
    import datasets

    from codemill.cli import main
    from codemill.pipelines.selfinstruct import run_selfinstruct, selfinstruct_target
    from codemill.stages.selfinstruct import STATS
    from codemill.stats import StageStats
    from codemill.train_hooks.shards import ShardReader

    config = _write_dag_config(tmp_path, sp_tokenizer)
    Script.prompts, Script.calls, Script.crash = Counter(), Counter(), ("solutions", 2)
    assert not run_selfinstruct(str(config))  # crashed in its second solutions call
    assert Script.prompts == {"questions": 2, "tests": 5, "solutions": 2}

    Script.crash = None
    assert run_selfinstruct(str(config))  # resumes: finished stages kept, the cached call reused
    assert Script.prompts == {"questions": 2, "tests": 5, "solutions": 4}

    task = selfinstruct_target(str(config))
    out = output_dir(task)
    chain = task.requires()

    def stats(stage: str) -> StageStats:
        return StageStats.from_json(chain[f"selfinstruct/{stage}"].committed().read_text(STATS))

    solutions_stats = stats("solutions")
    assert solutions_stats.extra["cache"] == {"hits": 2, "misses": 2, "model_calls": 1}
    funnel = json.loads((out / "funnel.json").read_text())
    assert list(funnel.items()) == [
        ("generated", 8), ("unique", 7), ("near_unique", 6), ("decontaminated", 5),
        ("with_parseable_tests", 4), ("candidates_generated", 40), ("candidates_parseable", 38),
        ("candidates_tried", 38), ("candidates_passing", 15), ("questions_with_a_pass", 3), ("kept", 3)]
    assert "generated" in (out / "funnel.txt").read_text()
    reasons = {r["reason"]: r for r in read_jsonl(output_dir(chain["selfinstruct/dedup"]) / "dropped.jsonl")}
    assert reasons["benchmark_contamination"]["detail"] == "humaneval:HumanEval/0"
    assert reasons["near_duplicate"]["question"].endswith("intact.")
    assert reasons["exact_duplicate"]["question"].startswith("write a function that COUNTS")
    assert stats("dedup").dropped == {"benchmark_contamination": 1, "exact_duplicate": 1, "near_duplicate": 1}
    assert stats("questions").dropped == {"no_list": 2, "too_short": 1}

    rows = datasets.load_from_disk(str(out / "dataset"))
    assert rows.num_rows == 3
    assert [(r["solution"].split("(")[0], r["passing_index"], r["num_tried"], r["num_passing"]) for r in rows] == [
        ("def reverse_words", 2, 8, 5), ("def sum_of_squares", 0, 10, 1), ("def only_evens", 1, 10, 9)]
    first = rows[0]
    assert first["tests"][0] == "assert reverse_words('hello world') == 'olleh dlrow'"
    assert first["num_candidates"] == 10 and first["prompt_version"] == PROMPT_VERSION
    assert first["model"]["code"]["backend"] == "test_selfinstruct:ScriptedModel"
    assert first["sampling"]["solutions"]["n"] == 10 and first["sampling"]["solutions"]["stop"] == []
    assert rows.features["sampling"]["solutions"]["stop"] == datasets.List(datasets.Value("string"))
    assert read_jsonl(out / "selfinstruct.jsonl")[0]["solution"] == first["solution"]
    instruct = read_jsonl(out / "instruct.jsonl")
    assert instruct[0]["text"].startswith("<s>[INST] Write a function that reverses")
    assert instruct[0]["completion"].endswith("[/PYTHON] </s>")

    shards = ShardReader(out / "shards")
    assert shards.has_loss_spans and shards.rows >= 1
    from codemill.tokenize.tokenizer import load_tokenizer
    tok = load_tokenizer(sp_tokenizer)
    chunk = shards.chunks()[0][0]
    spans = chunk.span_values[chunk.span_offsets[0]:chunk.span_offsets[1]]
    answer = tok.decode(chunk.tokens[0][spans[0]:spans[1]])
    assert answer.strip().startswith("[PYTHON]") and "reverse_words" in answer

    # Every stage again from scratch, the cache kept: identical output, not one model call.
    calls = Counter(Script.calls)
    before = (out / "selfinstruct.jsonl").read_text()
    for stage in ("questions", "dedup", "tests", "solutions", "execute", "select"):
        shutil.rmtree(tmp_path / "out" / "selfinstruct" / stage)
    assert main(["selfinstruct", str(config)]) == 0  # this time through the command line
    assert "kept" in capsys.readouterr().out
    assert Script.calls == calls
    assert (out / "selfinstruct.jsonl").read_text() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's full isolation needs root")
def test_seed_tasks_skip_the_tests_stage_and_their_references_are_tried_after_the_model(tmp_path, sp_tokenizer):
    import datasets

    from codemill.cli import main
    from codemill.pipelines.selfinstruct import latest_shards, run_selfinstruct

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(task) + "\n" for task in SEED_TASKS))
    config = _write_dag_config(tmp_path, sp_tokenizer, seeds)
    Script.prompts, Script.calls, Script.crash = Counter(), Counter(), None
    task = run_selfinstruct(str(config), ["selfinstruct.questions.topics=['strings']"])
    assert task is not None
    assert Script.prompts == {"questions": 1, "tests": 3, "solutions": 5}  # no tests asked for seeds
    out = output_dir(task)
    funnel = json.loads((out / "funnel.json").read_text())
    assert {k: funnel[k] for k in ("generated", "seeded", "with_parseable_tests", "references",
                                   "candidates_tried", "kept", "kept_references")} == {
        "generated": 4, "seeded": 3, "with_parseable_tests": 5, "references": 2,
        "candidates_tried": 35, "kept": 3, "kept_references": 1}
    rows = {r["id"]: r for r in datasets.load_from_disk(str(out / "dataset"))}
    assert set(rows) == {"seed/clamp", "seed/halve", "q0-0-0-0"}  # shout's reference fails
    clamp, halve = rows["seed/clamp"], rows["seed/halve"]
    assert (clamp["solution_source"], clamp["passing_index"], clamp["num_candidates"], clamp["num_tried"]) == (
        "reference", 10, 10, 11)
    assert clamp["solution"] == SEED_TASKS[0]["solution"] and clamp["tests"] == SEED_TASKS[0]["tests"]
    assert (halve["solution_source"], halve["passing_index"], halve["topic"]) == ("model", 1, "arithmetic")
    assert rows["q0-0-0-0"]["solution_source"] == "model"
    assert "seeded" in (out / "funnel.txt").read_text()

    # `codemill train --selfinstruct OUT` finds the instruction shards of the newest run
    assert Path(latest_shards(str(tmp_path / "out")).removeprefix("file://")) == out / "shards"
    seeds.write_text("{broken\n")
    assert main(["selfinstruct", str(config)]) == 2  # before any task starts
