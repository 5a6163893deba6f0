"""The `codemill` command line. Commands import what they need when they run, so
`codemill --help` answers at once."""

from __future__ import annotations

import argparse
import json
import sys

from codemill import __version__
from codemill.errors import ConfigError

EPILOG = """\
examples:
  codemill run                         run the embedded demo (this machine's own code)
  codemill run my-run.toml             run a config
  codemill run my-run.toml --master spark://host:7077 --set ingest.max_file_bytes=2000000
  codemill config my-run.toml          print the config as codemill understands it
  codemill clean my-run.toml --yes     remove outputs under out that the config no longer uses
  codemill shards inspect codemill-out/shards/base/<fingerprint>
  codemill train --config codemill/configs/train-tiny.toml --mix base --out runs/tiny
  codemill export-hf runs/tiny --tokenizer SHARD_DIR --out runs/tiny-hf
  codemill eval --model runs/tiny-hf --n 20 --temperature 0.8 --limit 10 --out runs/tiny-eval
  codemill selfinstruct my-run.toml    generate a self-instruct set
  codemill jvm-archive                 make later runs start sooner (make does this)
"""


def _overrides(args: argparse.Namespace) -> list[str]:
    """`--set` values plus the shorthand flags, as `key=value` overrides."""
    out = list(args.set or [])
    if getattr(args, "out", None) is not None:
        out.append(f"out={json.dumps(args.out)}")
    if getattr(args, "master", None) is not None:
        out.append(f"spark.master={json.dumps(args.master)}")
    if getattr(args, "workers", None) is not None:
        out.append(f"luigi.workers={args.workers}")
    if getattr(args, "progress", None) is not None:
        out.append(f"luigi.progress_seconds={args.progress}")
    if getattr(args, "log_json", False):
        out.append('luigi.log_format="json"')
    if getattr(args, "scheduler", None) is not None:
        host, _, port = args.scheduler.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--scheduler takes HOST:PORT, got {args.scheduler!r}")
        out += ["luigi.local_scheduler=false", f"luigi.scheduler_host={json.dumps(host)}",
                f"luigi.scheduler_port={port}"]
    return out


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a config value, e.g. --set {example} (repeatable)")


def _add_run_args(p: argparse.ArgumentParser, config_required: bool = False,
                  spark: bool = True) -> None:
    """The arguments of every command that runs (or shows) a run config."""
    if config_required:
        p.add_argument("config", help="run config (TOML)")
    else:
        p.add_argument("config", nargs="?", help="run config (TOML); default: the embedded demo")
    _add_set(p, "near_dedup.threshold=0.8")
    p.add_argument("--out", help="output root (config key `out`)")
    p.add_argument("--workers", type=int, help="Luigi workers running tasks in parallel")
    p.add_argument("--scheduler", metavar="HOST:PORT",
                   help="use a running central Luigi scheduler (luigid) instead of the local one")
    p.add_argument("--progress", type=int, nargs="?", const=10, metavar="SECONDS",
                   help="print the running Spark job and its task counts every SECONDS (default 10) "
                   "as plain lines, readable in a log file")
    p.add_argument("--log-json", action="store_true",
                   help="print every log line as a JSON object (for log collectors)")
    if spark:
        p.add_argument("--master", help="Spark master URL: local[*], spark://host:7077, yarn, k8s://...")


def _java_found() -> bool:
    """False, having said how to get one, when Spark would find no Java runtime."""
    from codemill.spark import JavaMissingError, require_java

    try:
        require_java()
    except JavaMissingError as exc:
        print(f"codemill: {exc}", file=sys.stderr)
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from codemill.config import load_run_config
    from codemill.pipelines.pretrain import run_pretrain

    overrides = _overrides(args)
    load_run_config(args.config, overrides)  # fail on a bad config before anything starts
    if not _java_found():
        return 2
    task = run_pretrain(args.config, overrides)
    if task is None:
        print("codemill: the run did not finish; see the errors above. Re-running resumes "
              "from the last completed stage.", file=sys.stderr)
        return 1
    print("\n" + task.committed().read_text("summary.txt"), end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from codemill.config import load_run_config, to_dict

    print(json.dumps(to_dict(load_run_config(args.config, _overrides(args))), indent=2))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from codemill.pipelines.clean import clean, describe

    print(describe(clean(args.configs, _overrides(args), remove=args.yes), removed=args.yes))
    return 0


def cmd_shards_inspect(args: argparse.Namespace) -> int:
    from codemill.storage import StorageError
    from codemill.tokenize.shards import ShardError, inspect_shards, verify_shards

    try:
        print(inspect_shards(args.dir, sample=args.sample))
    except (ShardError, StorageError) as exc:
        print(f"codemill: {exc}", file=sys.stderr)
        return 1
    return 1 if verify_shards(args.dir) else 0


def _shards_of_run(run_out: str, mix: str) -> str:
    from codemill.storage.folder import Folder

    out = Folder(run_out)
    report = out.join("report.json")
    try:
        mixes = json.loads(out.read_text("report.json"))["mixes"]
    except OSError:
        raise ConfigError(f"{report} does not exist: run `codemill run` first") from None
    if mix not in mixes:
        raise ConfigError(f"{report} has no mix {mix!r}; it has {sorted(mixes)}")
    return mixes[mix]["shards"]


def cmd_train(args: argparse.Namespace) -> int:
    from codemill.pipelines.selfinstruct import latest_shards
    from codemill.train_hooks.train import load_train_config, train

    shards = list(args.shards) + [_shards_of_run(args.run, m) for m in args.mix or []]
    shards += [latest_shards(out) for out in args.selfinstruct or []]
    if not shards:
        raise ConfigError("give shard directories, --run DIR --mix NAME or --selfinstruct DIR")
    cfg = load_train_config(args.config, train_overrides(args))
    summary = train(cfg, shards, args.out, args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from codemill.train_hooks.export import export_hf

    summary = export_hf(args.checkpoint, args.out, args.tokenizer, args.dtype)
    print(json.dumps(summary, indent=2))
    if not summary["tokenizer_files"]:
        print("codemill: no tokenizer exported (give --tokenizer): AutoTokenizer will not load this "
              "directory", file=sys.stderr)
    return 0


def _eval_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` values, then the flags of `codemill eval` as `key=value` overrides."""
    flags = {"model.path": args.model, "model.backend": args.backend, "sampling.n": args.n,
             "sampling.temperature": args.temperature, "sampling.top_p": args.top_p,
             "sampling.max_new_tokens": args.max_new_tokens, "sampling.seed": args.seed, "limit": args.limit}
    return [*(args.set or []), *(f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None)]


def cmd_eval(args: argparse.Namespace) -> int:
    from codemill.evaluate.config import load_eval_config
    from codemill.evaluate.run import evaluate, format_table
    from codemill.selfinstruct.backends import BackendError
    from codemill.selfinstruct.sandbox import SandboxUnavailable

    cfg = load_eval_config(args.config, _eval_overrides(args))
    try:
        summary = evaluate(cfg, args.out)
    except (BackendError, SandboxUnavailable) as exc:
        print(f"codemill: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary) + "\n".join(summary["files"]))
    return 0


def cmd_selfinstruct(args: argparse.Namespace) -> int:
    from codemill.pipelines.selfinstruct import run_selfinstruct
    from codemill.stages.selfinstruct import FUNNEL
    from codemill.storage import display

    task = run_selfinstruct(args.config, _overrides(args))
    if task is None:
        print("codemill: the self-instruct run did not finish; see the errors above. Re-running "
              "resumes: finished stages are kept and completed model calls are cached.",
              file=sys.stderr)
        return 1
    output = task.committed()
    print(f"\n{output.read_text(FUNNEL)}output: {display(output.uri)}")
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    import itertools

    from tqdm import tqdm

    from codemill.config.loader import expand_path
    from codemill.selfinstruct.pipeline import format_jsonl
    from codemill.selfinstruct.seeds import doctest_tasks
    from codemill.storage.local import write_text_atomic

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: {args.limit} is not a positive number of tasks")
    if args.min_tests < 2:
        raise ConfigError(f"--min-tests: {args.min_tests} leaves no hidden test (use 2 or more)")
    roots = [expand_path(root) for root in args.roots or ["{stdlib}"]]
    found = tqdm(doctest_tasks(roots, args.min_tests), desc="mining documented functions",
                 unit=" tasks", mininterval=1.0)
    tasks = list(itertools.islice(found, args.limit))
    found.close()
    write_text_atomic(args.out, format_jsonl(tasks), encoding="utf-8")
    print(f"codemill: {len(tasks)} seed tasks from {', '.join(roots)} -> {args.out}")
    return 0


def cmd_jvm_archive(args: argparse.Namespace) -> int:
    import time

    from codemill.jvm_classes import archive_path, build_archive

    if not _java_found():
        return 2
    path = archive_path()
    if path is not None and path.is_file() and not args.rebuild:
        print(f"codemill: JVM class archive up to date: {path}")
        return 0
    started = time.perf_counter()
    print("codemill: recording the classes a run loads (a small run, about a minute) ...")
    try:
        path = build_archive()
    except OSError as exc:
        print(f"codemill: cannot write the JVM class archive: {exc} (set XDG_CACHE_HOME to a writable "
              "folder; runs work without the archive, only start slower)", file=sys.stderr)
        return 1
    size = path.stat().st_size / (1 << 20)
    print(f"codemill: JVM class archive written in {time.perf_counter() - started:.0f} s: {path} ({size:.0f} MB)")
    return 0


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """For `codemill train` and the torchrun entry point alike: `--resume` (True: the
    checkpoint must exist) or `--resume=auto` ("auto": use it if it does), and
    `--no-verify` (read with `train_overrides`)."""
    parser.add_argument("--no-verify", action="store_true",
                        help="skip checking the shard files against their manifests' sha256")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, choices=[True, "auto"], metavar="auto",
        type=lambda value: "auto" if value == "auto" else value,
        help="continue from OUT's newest checkpoint (an error without one); --resume=auto: continue "
             "if there is one, else start at step 0")


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with --no-verify's."""
    return [*(args.set or []), *(["verify_shards=false"] if args.no_verify else [])]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codemill",
        description="Build Code Llama-style training data: ingest, dedup, filter, mix, "
        "tokenize, fill-in-the-middle, shards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"codemill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="run the pretraining DAG (ingest, dedup, ...) on a config",
        description="Run the pretraining DAG with Luigi and Spark. Completed stages are "
        "skipped; changed settings re-run the stages they affect.",
    )
    _add_run_args(run)
    run.set_defaults(func=cmd_run)

    show = sub.add_parser("config", help="print a config with defaults and overrides applied",
                          description="Print the config as codemill reads it, as JSON.")
    _add_run_args(show)
    show.set_defaults(func=cmd_config)

    cl = sub.add_parser(
        "clean", help="list (with --yes remove) outputs under out that no current config uses",
        description="List the stage output folders under the configs' out that none of their "
        "DAGs' tasks would use (older fingerprints) and attempt folders that are not the "
        "committed one, with sizes and a total; --yes removes them. Holds the run lease on "
        "out, so it refuses (exit 3) while a run writes there.")
    cl.add_argument("configs", nargs="*", help="run configs (TOML) whose outputs to keep; "
                    "default: the embedded demo")
    _add_set(cl, "near_dedup.threshold=0.8")
    cl.add_argument("--out", help="output root (config key `out`)")
    cl.add_argument("--master", help="Spark master URL, for an out only Hadoop reaches")
    cl.add_argument("--yes", action="store_true", help="remove them (default: only list them)")
    cl.set_defaults(func=cmd_clean)

    shards = sub.add_parser("shards", help="look into training shards")
    shards_sub = shards.add_subparsers(dest="shards_command", metavar="COMMAND", required=True)
    inspect = shards_sub.add_parser(
        "inspect", help="print a shard directory's manifest, verify checksums, decode a sample",
        description="Print the manifest (tokenizer, FIM, mix shares, counts), verify every "
        "shard's sha256, and decode one sequence with the FIM markers visible. "
        "Exits 1 if any check fails.")
    inspect.add_argument("dir", help="a shard directory (holds manifest.json) or its output folder "
                         "(holds _COMMIT.json): a path, or an s3://, gs://, hdfs:// URI (downloaded "
                         "into $CODEMILL_CACHE, default ~/.cache/codemill/shards)")
    inspect.add_argument("--sample", type=int, default=0, help="which sequence to decode (default 0)")
    inspect.set_defaults(func=cmd_shards_inspect)

    tr = sub.add_parser(
        "train", help="train a Llama-style model on shards (also long-context fine-tuning)",
        description="Train on one or more shard directories (mixed by their weights in the "
        "config). Writes checkpoint-<step>.pt (the last keep_checkpoints; checkpoint.pt links the "
        "newest), metrics.jsonl and loss.png to --out; --resume continues exactly where the newest "
        "checkpoint stopped. Under torchrun it trains with FSDP2 (parallel = \"ddp\" for DDP).")
    tr.add_argument("shards", nargs="*", help="shard directories: paths, or s3://, gs://, hdfs:// URIs "
                    "(downloaded into the config's cache_dir)")
    tr.add_argument("--config", help="training config (TOML, `preset = \"paper\" | \"tiny\" | "
                    "\"lcft\"`); default: the paper's recipe")
    tr.add_argument("--run", default="codemill-out", help="with --mix: a `codemill run` output root")
    tr.add_argument("--mix", action="append", help="train on this mix of --run (repeatable)")
    tr.add_argument("--selfinstruct", action="append", metavar="DIR",
                    help="train on the instruction shards of the newest `codemill selfinstruct` "
                    "run with this `out` (repeatable)")
    tr.add_argument("--out", required=True, help="output directory")
    add_train_flags(tr)
    _add_set(tr, "lr=1e-4")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser(
        "export-hf", help="write a training checkpoint as a Hugging Face transformers model directory",
        description="Write a checkpoint of `codemill train` as a LlamaForCausalLM directory "
        "(config.json, generation_config.json, model.safetensors) that "
        "AutoModelForCausalLM.from_pretrained loads, with the tokenizer when given. Tensors keep "
        "their values; the rotary layout needs no permutation.")
    ex.add_argument("checkpoint", help="a checkpoint.pt, or the training output directory holding one")
    ex.add_argument("--out", required=True, help="the model directory to write (must not exist, or be empty)")
    ex.add_argument("--tokenizer", help="the tokenizer.model the shards were tokenized with, or a shard "
                    "directory (its tokenizer.model and any Hugging Face tokenizer files beside it are copied)")
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="weights' dtype in the export (default float32, as trained)")
    ex.set_defaults(func=cmd_export_hf)

    ev = sub.add_parser(
        "eval", help="HumanEval pass@k of a model (a transformers directory, vLLM, an HTTP server)",
        description="Generate n samples per HumanEval problem with a self-instruct backend, run each "
        "in the sandbox against the problem's tests, and write OUT/results.jsonl (per problem), "
        "OUT/summary.json and OUT/passk.png: pass@k (Chen et al.'s unbiased estimator) for k in 1, "
        "10, 100 up to n. Model calls are cached in OUT/cache, so a re-run resumes.")
    ev.add_argument("config", nargs="?", help="eval config (TOML: limit, ks, [model], [sampling], [sandbox])")
    ev.add_argument("--model", help="local model directory (e.g. from `codemill export-hf`): model.path")
    ev.add_argument("--backend", help="transformers (default), vllm, http, or package.module:factory")
    ev.add_argument("--n", type=int, help="samples per problem (default 1)")
    ev.add_argument("--temperature", type=float, help="0 is greedy (default; then n must be 1)")
    ev.add_argument("--top-p", type=float, help="nucleus sampling (default 0.95)")
    ev.add_argument("--max-new-tokens", type=int, help="per sample (default 512)")
    ev.add_argument("--seed", type=int, help="sampling seed (default 0)")
    ev.add_argument("--limit", type=int, help="the first N problems only (default: all 164)")
    ev.add_argument("--out", required=True, help="output directory")
    _add_set(ev, "sandbox.timeout_s=10")
    ev.set_defaults(func=cmd_eval)

    si = sub.add_parser(
        "selfinstruct", help="generate a self-instruct set: questions, tests, solutions, sandbox",
        description="Run the self-instruct DAG (questions -> dedup -> tests -> solutions -> "
        "execute -> select) on the [selfinstruct] table of a run config. Finished stages are "
        "skipped and every model call is cached, so a re-run resumes where a run stopped.")
    _add_run_args(si, config_required=True, spark=False)
    si.set_defaults(func=cmd_selfinstruct)

    sd = sub.add_parser(
        "seeds", help="mine self-instruct seed tasks from documented functions",
        description="Write a JSONL of seed tasks for [selfinstruct] seed_tasks: every top-level "
        "function under ROOTS whose docstring shows calls of it with literal results becomes a "
        "question (its signature and docstring), tests (those calls as asserts) and a reference "
        "solution (its source and the imports it uses). Functions that need other module state "
        "are skipped; the sandbox later drops those whose own examples fail.")
    sd.add_argument("roots", nargs="*", metavar="ROOT",
                    help="folders or .py files; {stdlib} and {site_packages} name this interpreter's "
                    "(default: {stdlib})")
    sd.add_argument("--out", required=True, help="the JSONL file to write")
    sd.add_argument("--limit", type=int, help="stop after this many tasks (in path order)")
    sd.add_argument("--min-tests", type=int, default=2, help="examples a function needs (default 2)")
    sd.set_defaults(func=cmd_seeds)

    ja = sub.add_parser(
        "jvm-archive", help="record the classes Spark's driver loads, so later runs start sooner",
        description="Run the pipeline once on a small sample of this machine's code with a "
        "driver JVM that stores the classes it loaded in a class-data sharing archive "
        "(~/.cache/codemill/jvm, one per Java runtime and Spark installation, about 200 MB). "
        "Later drivers map it instead of loading classes from jars. `make` runs this; "
        "nothing needs it.")
    ja.add_argument("--rebuild", action="store_true", help="build it even if it exists")
    ja.set_defaults(func=cmd_jvm_archive)
    return parser


def main(argv: list[str] | None = None) -> int:
    from codemill.errors import InputError, SchedulerUnreachableError
    from codemill.storage.lease import LeaseHeldError

    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"codemill: config error: {exc}", file=sys.stderr)
        return 2
    except (InputError, SchedulerUnreachableError) as exc:
        print(f"codemill: {exc}", file=sys.stderr)
        return 2
    except LeaseHeldError as exc:
        print(f"codemill: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
