"""A training run's checkpoints in its output folder: `checkpoint-<step>.pt`, the last
`keep` of them kept, and `checkpoint.pt`, a link to the newest.

Each file is written under a temporary name and renamed when complete, so a crash
mid-write leaves the checkpoints before it intact. Resuming reads the newest; when it
is unreadable (a disk fault, a copy cut short), the error names it and the one before,
and says how to continue from that one: which data a run continues from is the user's
call, not a fallback's.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from codemill.errors import ConfigError
from codemill.storage.local import atomic_path

LATEST = "checkpoint.pt"
_NAME = re.compile(r"checkpoint-(\d+)\.pt")


def checkpoint_path(out: Path, step: int) -> Path:
    return out / f"checkpoint-{step:08d}.pt"


def step_of(path: Path) -> int:
    return int(_NAME.fullmatch(path.name).group(1))


def find_checkpoints(out: Path) -> list[Path]:
    """The checkpoints in `out`, oldest first."""
    if not out.is_dir():
        return []
    return sorted((p for p in out.iterdir() if _NAME.fullmatch(p.name)), key=step_of)


class Checkpoints:
    """The checkpoints of one run: those it resumed after, then those it writes."""

    def __init__(self, out: Path, keep: int, resumed: bool) -> None:
        self.out = out
        self.keep = keep
        # a run that starts over replaces an earlier run's checkpoints with its own
        self.kept = find_checkpoints(out) if resumed else []

    def newest(self) -> Path | None:
        return self.kept[-1] if self.kept else None

    def load_newest(self) -> dict[str, Any]:
        """The newest checkpoint; an unreadable one is named with the one before it."""
        newest = self.kept[-1]
        try:
            # mapped, not read: every rank of a machine loads it and shares the pages
            return torch.load(newest, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise ConfigError(f"{newest}: not a readable checkpoint ({reason}); {self._way_back()}") from None

    def _way_back(self) -> str:
        if len(self.kept) < 2:
            return "there is no earlier one: remove it to start over, or restore a copy"
        previous = self.kept[-2]
        return (f"the one before is {previous} (step {step_of(previous):,}): move {self.kept[-1].name} away and "
                "--resume continues from it")

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Write `state` as step `step`'s checkpoint, point `checkpoint.pt` at it and
        remove what falls out of the last `keep`."""
        path = checkpoint_path(self.out, step)
        # saved to a path (not a file object), so torch names the archive inside after it
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        with atomic_path(self.out / LATEST) as tmp:
            tmp.symlink_to(path.name)
        self.kept = [p for p in self.kept if p != path] + [path]
        for stale in set(find_checkpoints(self.out)) - set(self.kept[-self.keep:]):
            stale.unlink(missing_ok=True)
        self.kept = self.kept[-self.keep:]
        return path
