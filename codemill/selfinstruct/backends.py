"""Model backends behind one interface, a disk cache, and a data-parallel launcher.

`Backend.generate(prompts, sampling)` returns `sampling.n` completions per prompt.
Backends: Hugging Face transformers (CPU or GPU, batched), vLLM (one long-lived
engine per process), an OpenAI-compatible HTTP server (`/v1/completions`: vllm
serve, TGI, llama.cpp's server), or any factory named in the config. Weights
come from a local directory only; nothing is downloaded.

`CachedBackend` stores every completed call on disk, one file per (model,
prompt, sampling settings, seed) key written atomically, so a re-run makes no
model call and a crashed run resumes where it stopped. `DataParallelBackend`
splits each call's prompts across worker processes, one per device.

Prompts are chat text that starts with the BOS string (`<s>[INST] …`), so the
backends tokenize them without adding another BOS. The transformers backend turns
that leading string into the BOS id itself: a tokenizer that reads special-token
text as plain text (codemill's own, so that code cannot forge control ids) would
otherwise spell it out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import os
import traceback
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from codemill.errors import ConfigError
from codemill.selfinstruct.config import ModelBackendConfig, SamplingSettings
from codemill.storage.local import write_text_atomic

Completions = list[list[str]]


class BackendError(RuntimeError):
    """A model call failed (server error, worker died, malformed reply)."""


class BackendUnavailable(BackendError):
    """The backend's package or hardware is missing on this machine."""


class Backend(ABC):
    @abstractmethod
    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        """`sampling.n` completions (text after the prompt) for each prompt, in order."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release processes, engines or memory; the backend is unusable afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (servers cut there; transformers may not)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(cuts)] if cuts else text


def local_model_dir(path: str) -> Path:
    root = Path(path).expanduser()
    if not (root / "config.json").is_file():
        raise ConfigError(f"model path {root}: not a local model directory (no config.json); "
                          "weights are loaded from local paths only")
    return root.resolve()


def model_digest(root: Path, small: int = 16 << 20) -> str:
    """A hash of a model directory: small files (configs, tokenizer) by content, large
    ones (weights) by name and size, so that it costs milliseconds on a 70B model."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        h.update(f"{path.relative_to(root)}\0{size}\0".encode())
        if size <= small:
            h.update(path.read_bytes())
    return h.hexdigest()


def model_identity(cfg: ModelBackendConfig) -> dict[str, Any]:
    """What, besides prompt and sampling, decides a model's output: the cache key's model
    part and the stages' fingerprints. Cheap: never loads the model."""
    if cfg.backend == "http":
        return {"backend": "http", "url": cfg.url.rstrip("/"), "model": cfg.served_name}
    ident: dict[str, Any] = {"backend": cfg.backend, "dtype": cfg.dtype}
    if cfg.path:
        root = local_model_dir(cfg.path)
        ident.update(path=str(root), digest=model_digest(root))
    return ident


# --- Hugging Face transformers ------------------------------------------------------------

class TransformersBackend(Backend):
    """`generate` with `num_return_sequences=n`, `batch_size` prompts per forward pass.

    Each batch seeds torch from (seed, the batch's prompts), so a batch's samples are
    reproducible whatever ran before it in the process.
    """

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8) -> None:
        root = local_model_dir(path)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
        # Decoder-only: pad on the left so every prompt ends where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = AutoModelForCausalLM.from_pretrained(
            root, local_files_only=True, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
        self.model.to(device).eval()
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        out: Completions = []
        for batch in _batches(list(prompts), self.batch_size):
            texts = self._generate_batch(batch, sampling)
            out += [texts[i * sampling.n:(i + 1) * sampling.n] for i in range(len(batch))]
        return out

    def _generate_batch(self, batch: Sequence[str], sampling: SamplingSettings) -> list[str]:
        torch = self._torch
        enc = self.tokenizer.pad({"input_ids": [prompt_ids(self.tokenizer, p) for p in batch]},
                                 return_tensors="pt", padding=True).to(self.device)
        options: dict[str, Any] = dict(max_new_tokens=sampling.max_new_tokens,
                                       num_return_sequences=sampling.n,
                                       pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature > 0:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            options.update(do_sample=False)
        if sampling.stop:
            options.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        torch.manual_seed(_batch_seed(sampling.seed, batch))
        with torch.inference_mode():
            ids = self.model.generate(**enc, **options)
        # Rows come prompt-major: the n samples of prompt 0, then of prompt 1, ...
        texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
        return [cut_at_stop(t, sampling.stop) for t in texts]

    def close(self) -> None:
        self.model = None


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """A prompt's token ids: a leading BOS string as the BOS id, the rest as text."""
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos):
        return [tokenizer.bos_token_id, *tokenizer.encode(prompt[len(bos):], add_special_tokens=False)]
    return tokenizer.encode(prompt, add_special_tokens=False)


def _batch_seed(seed: int, batch: Sequence[str]) -> int:
    blob = json.dumps([seed, list(batch)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


# --- vLLM -----------------------------------------------------------------------------------

_ENGINES: dict[str, Any] = {}  # one engine per process and model: building one takes minutes


class VLLMBackend(Backend):
    """vLLM's offline engine; every prompt sampled with `SamplingParams(n=…, seed=…)`."""

    def __init__(self, path: str, dtype: str = "auto",
                 engine_args: Mapping[str, Any] | None = None) -> None:
        try:
            import vllm
        except ImportError:
            raise BackendUnavailable(
                "the vllm backend needs the `vllm` package, which is not installed here "
                "(pip install vllm, on a machine with a CUDA GPU); the transformers and http "
                "backends work without it") from None
        root = str(local_model_dir(path))
        args = {"dtype": dtype, **(engine_args or {})}
        key = json.dumps([root, args], sort_keys=True)
        if key not in _ENGINES:
            _ENGINES[key] = vllm.LLM(model=root, **args)
        self._vllm, self._llm = vllm, _ENGINES[key]

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        params = self._vllm.SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=list(sampling.stop) or None)
        tokenizer = self._llm.get_tokenizer()
        requests = [{"prompt_token_ids": tokenizer.encode(p, add_special_tokens=False)}
                    for p in prompts]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        return [[c.text for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]


# --- OpenAI-compatible HTTP ---------------------------------------------------------------

class HTTPBackend(Backend):
    """POST /v1/completions with a list of prompts and `n`; no retries: a failed call
    raises, and re-running resumes from the cache."""

    def __init__(self, url: str, model: str, batch_size: int = 8, timeout_s: float = 600.0,
                 api_key_env: str = "") -> None:
        root = url.rstrip("/")
        self.endpoint = (root if root.endswith("/v1") else root + "/v1") + "/completions"
        self.model, self.batch_size, self.timeout_s = model, batch_size, timeout_s
        self.headers = {"Content-Type": "application/json"}
        if api_key_env:
            if api_key_env not in os.environ:
                raise ConfigError(f"api_key_env: the environment variable {api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        out: Completions = []
        for batch in _batches(list(prompts), self.batch_size):
            body = {"model": self.model, "prompt": list(batch), "n": sampling.n,
                    "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "seed": sampling.seed,
                    # vLLM's extension: the prompt carries its own BOS
                    "add_special_tokens": False}
            if sampling.stop:
                body["stop"] = list(sampling.stop)
            choices = self._post(body).get("choices")
            if not isinstance(choices, list) or len(choices) != len(batch) * sampling.n:
                raise BackendError(f"{self.endpoint}: expected {len(batch) * sampling.n} choices "
                                   f"for {len(batch)} prompts x n={sampling.n}, got "
                                   f"{len(choices) if isinstance(choices, list) else choices!r}")
            # Choice i*n + j is sample j of prompt i (servers may answer out of order).
            texts = [c["text"] for c in sorted(choices, key=lambda c: c["index"])]
            out += [texts[i * sampling.n:(i + 1) * sampling.n] for i in range(len(batch))]
        return out

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.endpoint, json.dumps(body).encode(), self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise BackendError(f"{self.endpoint}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise BackendError(f"{self.endpoint}: cannot reach the server: {exc.reason}") from None
        except json.JSONDecodeError as exc:
            raise BackendError(f"{self.endpoint}: the reply is not JSON: {exc}") from None


# --- construction ---------------------------------------------------------------------------

def make_backend(cfg: ModelBackendConfig) -> Backend:
    """The backend a model config names (data parallel when it lists devices)."""
    if cfg.devices:
        return DataParallelBackend(cfg)
    if cfg.backend == "transformers":
        return TransformersBackend(cfg.path, cfg.device, cfg.dtype, cfg.batch_size)
    if cfg.backend == "vllm":
        return VLLMBackend(cfg.path, cfg.dtype, cfg.engine_args)
    if cfg.backend == "http":
        return HTTPBackend(cfg.url, cfg.served_name, cfg.batch_size, cfg.timeout_s, cfg.api_key_env)
    module, _, name = cfg.backend.partition(":")
    if not name:
        raise ConfigError(f"unknown backend {cfg.backend!r}")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"backend {cfg.backend!r}: {exc}") from None
    backend = factory(cfg)
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend {cfg.backend!r} returned {type(backend).__name__}, not a Backend")
    return backend


# --- disk cache -------------------------------------------------------------------------------

class CachedBackend(Backend):
    """Every prompt's completions on disk under a key of (model identity, prompt, sampling).

    Misses go to the model `chunk` prompts per call; each call's results are stored
    (one file per key, written to a temporary name then renamed) before the next call,
    so a crash loses at most the call in flight. Files make concurrent writers safe:
    whichever rename lands last, a reader sees one whole result. A file that cannot be
    read (cut short by a power loss) counts as a miss.
    """

    def __init__(self, inner: Backend, identity: Mapping[str, Any], cache_dir: str | os.PathLike,
                 chunk: int = 64) -> None:
        self.inner, self.identity, self.chunk = inner, dict(identity), chunk
        self.dir = Path(cache_dir)
        self.hits = self.misses = self.model_calls = 0

    def key(self, prompt: str, sampling: SamplingSettings) -> str:
        blob = json.dumps({"model": self.identity, "prompt": prompt,
                           "sampling": dataclasses.asdict(sampling)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def _load(self, key: str) -> list[str] | None:
        try:
            return json.loads(self._path(key).read_text())["samples"]
        except (OSError, ValueError, KeyError):
            return None

    def _store(self, key: str, prompt: str, sampling: SamplingSettings, samples: list[str]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"model": self.identity, "prompt": prompt,
                                            "sampling": dataclasses.asdict(sampling),
                                            "samples": samples}))

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        keys = [self.key(p, sampling) for p in prompts]
        first: dict[str, int] = {}  # key -> its first prompt: a repeated prompt runs once
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        found = {k: r for k in first if (r := self._load(k)) is not None}
        self.hits += sum(k in found for k in keys)
        self.misses += sum(k not in found for k in keys)
        todo = [i for k, i in first.items() if k not in found]
        for batch in _batches(todo, self.chunk):
            completions = self.inner.generate([prompts[i] for i in batch], sampling)
            self.model_calls += 1
            if len(completions) != len(batch) or any(len(c) != sampling.n for c in completions):
                raise BackendError(f"the backend returned {[len(c) for c in completions]} "
                                   f"completions for {len(batch)} prompts x n={sampling.n}")
            for i, samples in zip(batch, completions):
                self._store(keys[i], prompts[i], sampling, samples)
                found[keys[i]] = samples
        return [found[k] for k in keys]

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "model_calls": self.model_calls}

    def close(self) -> None:
        self.inner.close()


# --- data parallel -----------------------------------------------------------------------------

def _serve(conn: Any, cfg: ModelBackendConfig, visible: str) -> None:
    """A worker: pin its devices before anything imports torch, build the backend once,
    then answer (prompts, sampling) requests until the parent closes the pipe."""
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    try:
        backend = make_backend(cfg)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    with backend:
        while True:
            try:
                request = conn.recv()
            except EOFError:
                return
            if request is None:
                return
            try:
                conn.send(("ok", backend.generate(*request)))
            except BaseException:
                conn.send(("error", traceback.format_exc()))


class DataParallelBackend(Backend):
    """One worker process per entry of `cfg.devices` (CUDA_VISIBLE_DEVICES; "cpu": none),
    each holding its own long-lived backend. A call's prompts are split into contiguous,
    near-equal parts, one per worker, generated at once and joined in order."""

    def __init__(self, cfg: ModelBackendConfig) -> None:
        # spawn, not fork: CUDA cannot be initialised again in a forked child
        context = multiprocessing.get_context("spawn")
        single = dataclasses.replace(cfg, devices=[])
        self._workers: list[tuple[Any, Any]] = []
        try:
            for device in cfg.devices:
                parent, child = context.Pipe()
                visible = "" if device == "cpu" else device
                proc = context.Process(target=_serve, args=(child, single, visible), daemon=True,
                                       name=f"codemill-model-{device}")
                proc.start()
                child.close()
                self._workers.append((proc, parent))
            self.pids = [self._receive(w) for w in self._workers]
        except BaseException:
            self.close()
            raise

    def _receive(self, worker: tuple[Any, Any]) -> Any:
        proc, conn = worker
        try:
            status, payload = conn.recv()
        except EOFError:
            raise BackendError(f"model worker {proc.name} died (exit code {proc.exitcode})") from None
        if status == "error":
            raise BackendError(f"model worker {proc.name} failed:\n{payload}")
        return payload

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> Completions:
        prompts = list(prompts)
        size, extra = divmod(len(prompts), len(self._workers))
        busy, start = [], 0
        for i, worker in enumerate(self._workers):
            stop = start + size + (i < extra)
            if stop > start:
                worker[1].send((prompts[start:stop], sampling))
                busy.append(worker)
            start = stop
        out: Completions = []
        failure: BackendError | None = None
        for worker in busy:  # read every reply, so that no worker is left mid-conversation
            try:
                out += self._receive(worker)
            except BackendError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return out

    def close(self) -> None:
        for _, conn in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc, _ in self._workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._workers = []
