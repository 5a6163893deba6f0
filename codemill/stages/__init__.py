"""The stage registry: every stage a DAG can run, by name.

The document stages run in `DOCUMENT_CHAIN` order, each reading the table of the
enabled stage before it; the others name their inputs. Adding a stage is one module
in this package plus one line here; its config sections join the run config.
"""

from __future__ import annotations

from typing import Any

from codemill.stages.base import DocumentStage, Stage, StageRef
from codemill.stages.exact_dedup import ExactDedup
from codemill.stages.filters import Filters
from codemill.stages.ingest import Ingest
from codemill.stages.kinds import Kinds
from codemill.stages.near_dedup import NearDedup
from codemill.stages.report import Report
from codemill.stages.selfinstruct import (
    DedupQuestions,
    ExecuteCandidates,
    Questions,
    SelectSolutions,
    WriteSolutions,
    WriteTests,
)
from codemill.stages.shards import Shards
from codemill.stages.token_counts import TokenCounts
from codemill.stages.tokenizer import Tokenizer

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (
    # the pretraining DAG: the document chain, in order ...
    Ingest,
    ExactDedup,
    NearDedup,
    Filters,
    Kinds,
    # ... then tokenizer, counts, one shards output per mix, and the report
    Tokenizer,
    TokenCounts,
    Shards,
    Report,
    # the self-instruct DAG, in order
    Questions,
    DedupQuestions,
    WriteTests,
    WriteSolutions,
    ExecuteCandidates,
    SelectSolutions,
)}

DOCUMENT_CHAIN = [name for name, stage in STAGES.items() if issubclass(stage, DocumentStage)
                  or stage is Ingest]
SELFINSTRUCT_CHAIN = [name for name in STAGES if name.startswith("selfinstruct/")]


def make_stage(cfg: Any, name: str, item: str = "") -> Stage:
    if name not in STAGES:
        raise KeyError(f"no stage named {name!r}; stages: {sorted(STAGES)}")
    return STAGES[name](cfg, item)


def document_chain(cfg: Any) -> list[str]:
    """The enabled document stages, in order."""
    return [name for name in DOCUMENT_CHAIN if make_stage(cfg, name).enabled()]


def previous_document_stage(cfg: Any, name: str) -> str:
    chain = document_chain(cfg)
    earlier = DOCUMENT_CHAIN[:DOCUMENT_CHAIN.index(name)]
    return [stage for stage in chain if stage in earlier][-1]


def final_document_stage(cfg: Any) -> StageRef:
    return StageRef(document_chain(cfg)[-1])
