"""Per-stage accounting: docs in == docs out + sum(dropped), always."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class AccountingError(AssertionError):
    pass


@dataclass
class StageStats:
    stage: str
    docs_in: int
    docs_out: int
    dropped: dict[str, int]
    bytes_in: int
    bytes_out: int
    seconds: float
    dropped_bytes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> StageStats:
        lost = self.docs_in - self.docs_out - sum(self.dropped.values())
        if lost:
            raise AccountingError(
                f"stage {self.stage}: {self.docs_in} in != {self.docs_out} out + "
                f"{sum(self.dropped.values())} dropped ({lost:+d} unaccounted)"
            )
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StageStats:
        return cls(**json.loads(text))
