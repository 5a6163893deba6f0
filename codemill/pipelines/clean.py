"""`codemill clean`: remove the outputs under a run's `out` that no current config uses.

Given the run configs (as `codemill run` takes them), every task of their DAGs names
the output folder it would use: the pretraining DAG's tasks, and the self-instruct
DAG's for a config that describes a self-instruct run. Under each stage's folder
(`<out>/<stage…>/[<item>/]<fingerprint>/`) any other fingerprint folder is stale, and
so is every attempt folder of a kept output besides its committed one. Stage folders
of a DAG no config describes are left alone, as is anything that is not a stage's
output (the latest report, the self-instruct model cache, logs).

Listing and removing hold the run lease on `out`, so neither happens while a run writes
there. Everything goes through the storage layer, so `out` may be any URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from codemill.config import load_run_config
from codemill.errors import ConfigError
from codemill.fingerprint import is_fingerprint
from codemill.pipelines.task import RunStage, out_filesystem
from codemill.stages import SELFINSTRUCT_CHAIN, STAGES, make_stage
from codemill.storage import FileSystem, display, join
from codemill.storage.commit import clean_stale_attempts, stale_attempts
from codemill.storage.lease import hold, release

STALE_OUTPUT = "no config uses it"
STALE_ATTEMPT = "attempt that is not the committed one"


@dataclass(frozen=True)
class Layout:
    """What the current configs use under `out`: the output folders of their tasks, and
    the stage folders that hold outputs (True: one folder per item below it)."""

    out: str
    kept: frozenset[str]
    stage_folders: dict[str, bool]
    unchecked: list[str] = field(default_factory=list)  # stage folders of DAGs no config runs


@dataclass(frozen=True)
class Removal:
    uri: str
    size: int
    reason: str


@dataclass
class CleanPlan:
    out: str
    removals: list[Removal]
    unchecked: list[str]  # existing stage folders left alone

    @property
    def total(self) -> int:
        return sum(r.size for r in self.removals)


def describes_selfinstruct(cfg: Any) -> bool:
    """Whether the config names the models of a self-instruct run."""
    try:
        cfg.selfinstruct.require_models()
    except ConfigError:
        return False
    return True


def dag_targets(config_path: str | None, overrides: Sequence[str], cfg: Any) -> list[RunStage]:
    from codemill.pipelines.pretrain import check_sources, pretrain_target
    from codemill.pipelines.selfinstruct import selfinstruct_target

    check_sources(cfg)
    targets = [pretrain_target(config_path, overrides)]
    if describes_selfinstruct(cfg):
        targets.append(selfinstruct_target(str(config_path or ""), overrides))
    return targets


def dag_tasks(targets: list[RunStage]) -> list[RunStage]:
    """Every task the targets need, themselves included."""
    found: dict[str, RunStage] = {}
    pending = list(targets)
    while pending:
        task = pending.pop()
        if task.task_id not in found:
            found[task.task_id] = task
            pending.extend(task.requires().values())
    return list(found.values())


def current_layout(config_paths: Sequence[str | None], overrides: Sequence[str],
                   cfgs: list[Any]) -> Layout:
    """The output folders and stage folders of the configs' DAGs."""
    out = cfgs[0].out_uri()
    tasks = [t for path, cfg in zip(config_paths, cfgs) for t in dag_tasks(dag_targets(path, overrides, cfg))]
    per_item = {t.stage for t in tasks if t.item}
    with_selfinstruct = any(describes_selfinstruct(cfg) for cfg in cfgs)
    folders, unchecked = {}, []
    for name in STAGES:
        folder = join(out, *make_stage(cfgs[0], name).output_parts())
        if name in SELFINSTRUCT_CHAIN and not with_selfinstruct:
            unchecked.append(folder)
        else:
            folders[folder] = name in per_item
    return Layout(out, frozenset(t.output_uri for t in tasks), folders, unchecked)


def stale_outputs(fs: FileSystem, folder: str, kept: frozenset[str]) -> list[str]:
    """The fingerprint folders directly under `folder` that no task uses."""
    return [uri for uri in (join(folder, name) for name in fs.children(folder) if is_fingerprint(name))
            if uri not in kept]


def stale_items(fs: FileSystem, stage_folder: str, kept: frozenset[str]) -> list[str]:
    """For a stage run per item: whole item folders no task uses (a mix no config has
    any more), else the stale fingerprint folders inside the item folders."""
    stale = []
    for item in (join(stage_folder, name) for name in fs.children(stage_folder)):
        outputs = stale_outputs(fs, item, kept)
        unused = not any(uri.startswith(item + "/") for uri in kept)
        whole = unused and bool(outputs) and len(outputs) == len(fs.children(item))
        stale += [item] if whole else outputs
    return stale


def folder_size(fs: FileSystem, uri: str) -> int:
    return sum(f.size for f in fs.list_files(uri))


def plan_clean(fs: FileSystem, layout: Layout) -> CleanPlan:
    """What is stale under `layout.out`: outputs no task uses, then attempts of used
    outputs other than the committed one."""
    stale = [uri for folder, per_item in layout.stage_folders.items()
             for uri in (stale_items if per_item else stale_outputs)(fs, folder, layout.kept)]
    attempts = [join(output, name) for output in sorted(layout.kept) for name in stale_attempts(fs, output)]
    removals = [Removal(uri, folder_size(fs, uri), STALE_OUTPUT) for uri in stale]
    removals += [Removal(uri, folder_size(fs, uri), STALE_ATTEMPT) for uri in attempts]
    return CleanPlan(layout.out, removals, [f for f in layout.unchecked if fs.children(f)])


def apply_plan(fs: FileSystem, plan: CleanPlan) -> None:
    """Remove what the plan lists; call it holding the lease on `plan.out`."""
    for removal in plan.removals:
        if removal.reason == STALE_OUTPUT:
            fs.delete(removal.uri)
    for output in sorted({r.uri.rsplit("/", 1)[0] for r in plan.removals if r.reason == STALE_ATTEMPT}):
        clean_stale_attempts(fs, output, keep="")


def same_out(cfgs: list[Any]) -> str:
    outs = sorted({cfg.out_uri() for cfg in cfgs})
    if len(outs) > 1:
        raise ConfigError(f"the configs write to different outs ({', '.join(map(display, outs))}); "
                          "clean one out at a time (--out sets it for all)")
    return outs[0]


def clean(config_paths: Sequence[str], overrides: Sequence[str], remove: bool) -> CleanPlan:
    """List what no config among `config_paths` (none: the embedded demo) uses under
    their `out`, and with `remove` delete it, holding the run lease on `out` throughout
    (LeaseHeldError when a run holds it)."""
    paths: list[str | None] = list(config_paths) or [None]
    cfgs = [load_run_config(path, list(overrides)) for path in paths]
    out = same_out(cfgs)
    fs = out_filesystem(cfgs[0])
    hold(fs, out, cfgs[0].lease_seconds)
    try:
        plan = plan_clean(fs, current_layout(paths, overrides, cfgs))
        if remove:
            apply_plan(fs, plan)
        return plan
    finally:
        release(out)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


def describe(plan: CleanPlan, removed: bool) -> str:
    """What was (or would be) removed, one folder a line with its size, and the total."""
    where = display(plan.out)
    if not plan.removals:
        lines = [f"{where}: nothing to remove; every output there is used by the config"]
    else:
        lines = [f"{'removed' if removed else 'would remove'} under {where}:"]
        lines += [f"  {human_size(r.size):>9}  {r.uri[len(plan.out) + 1:]}/  ({r.reason})" for r in plan.removals]
        lines.append(f"  {human_size(plan.total):>9}  total in {len(plan.removals)} folders")
        if not removed:
            lines.append("dry run: nothing was removed; add --yes to remove these")
    if plan.unchecked:
        lines.append("left alone (no config given describes a self-instruct run): "
                     + ", ".join(f"{u[len(plan.out) + 1:]}/" for u in plan.unchecked))
    return "\n".join(lines)
