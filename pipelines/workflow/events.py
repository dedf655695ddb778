"""What a running workflow streams: step started / progress / finished, then the result.

``StepProgress.event`` is the op's own typed event (``TextDelta`` and ``ChatUsage`` from ``chat``,
``ImageProgress`` and ``ImageResult`` from ``generate``); times are milliseconds since the workflow
started; ``cache_hit`` is None for a step that uses no cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepStarted:
    step: str
    op: str
    started_ms: float
    copies: int = 1  # fan-out copies running (1 without fan-out)


@dataclass(frozen=True)
class StepProgress:
    step: str
    event: Any  # TextDelta | ChatUsage | ImageProgress | ImageResult | ...
    copy: int = 0  # which fan-out copy (0 without fan-out)


@dataclass(frozen=True)
class StepFinished:
    step: str
    started_ms: float
    ended_ms: float
    cache_hit: bool | None

    def as_dict(self) -> dict[str, Any]:
        """The ``steps[]`` entry of the workflow APIs."""
        return {"name": self.step, "started_ms": self.started_ms, "ended_ms": self.ended_ms,
                "cache_hit": self.cache_hit}  # fmt: skip


@dataclass(frozen=True)
class WorkflowResult:
    """The last event: every workflow output by name (Python values: images are PNG bytes,
    embeddings tensors) and each step's record, in file order."""

    workflow: str
    outputs: dict[str, Any]
    steps: tuple[StepFinished, ...]


WorkflowEvent = StepStarted | StepProgress | StepFinished | WorkflowResult
