"""Settings of `codemill eval`: a TOML file (top-level keys and [model], [sampling],
[sandbox] tables), then `--set key=value` overrides and the command's flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codemill.config.loader import Section, invalid, load, read_toml, setting
from codemill.errors import ConfigError
from codemill.evaluate.humaneval import STOP
from codemill.evaluate.passk import KS
from codemill.selfinstruct.config import ModelBackendConfig, SamplingSettings, SandboxConfig


@dataclass
class EvalConfig(Section):
    """One HumanEval run. Defaults: greedy pass@1, as Code Llama reports it; Code Llama
    reports pass@10 and pass@100 at temperature 0.8, top-p 0.95 (Chen et al. drew n = 200)."""

    model: ModelBackendConfig = setting(ModelBackendConfig)
    sampling: SamplingSettings = setting(lambda: SamplingSettings(n=1, temperature=0.0, stop=STOP))
    sandbox: SandboxConfig = setting(SandboxConfig)
    limit: int = setting(0, ge=0)  # the first N problems only (quick runs); 0: all 164
    ks: list[int] = setting(lambda: list(KS), nonempty=True)  # reported where k <= n
    # Put before every prompt: the backends add no BOS themselves (self-instruct's chat
    # prompts carry their own), and a base model expects one.
    prompt_prefix: str = "<s>"
    cache_chunk: int = setting(64, ge=1)  # prompts per model call as the cache stores it

    def check(self) -> None:
        if any(k < 1 for k in self.ks):
            raise invalid("ks", f"{self.ks}: every k must be at least 1")
        if not any(k <= self.sampling.n for k in self.ks):
            raise invalid("ks", f"no k in {self.ks} is at most sampling.n = {self.sampling.n}")


def load_eval_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> EvalConfig:
    """The defaults, then the TOML file, then `key=value` overrides; errors name the key."""
    origin = str(path) if path is not None else "the defaults"
    data = read_toml(path) if path is not None else {}
    cfg = load(EvalConfig, data, origin, overrides, defaults=dataclasses.asdict(EvalConfig()))
    try:
        cfg.model.require_model()
    except ConfigError as exc:
        raise ConfigError(f"model.{exc}") from None
    if cfg.model.path:
        _refuse_checkpoint(Path(cfg.model.path))
    return cfg


def _refuse_checkpoint(path: Path) -> None:
    """A training checkpoint is not a model directory: say how to make one of it."""
    from codemill.train_hooks.checkpoints import LATEST as CHECKPOINT

    if path.is_file() or (path / CHECKPOINT).is_file():
        raise ConfigError(f"model.path: {path} is a training checkpoint, not a model directory; export it "
                          f"first (codemill export-hf {path} --tokenizer SHARD_DIR --out DIR) and evaluate DIR")
