"""What an operation is: a typed signature (inputs, outputs) and an async generator that runs it.

``run(context, args)`` yields the op's own progress events (``TextDelta``, ``ImageProgress``, ...;
the executor streams them as ``StepProgress``) and ends with one ``OpOutput``. ``args`` holds the
step's inputs by name, only those the step gave (optional ones may be absent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.types import ValueType, parse_type


@dataclass(frozen=True)
class Param:
    type: ValueType
    required: bool = False
    description: str = ""


def param(type_text: str, description: str = "", *, required: bool = False) -> Param:
    return Param(parse_type(type_text), required, description)


@dataclass(frozen=True)
class OpOutput:
    """The op's result: one value per declared output, and whether its stage calls hit the cache
    (None: the op uses no cache)."""

    values: dict[str, Any]
    cache_hit: bool | None = None


RunFunction = Callable[[OpContext, dict[str, Any]], AsyncIterator[Any]]


@dataclass(frozen=True)
class Operation:
    """One registered operation. ``one_of``: exactly one of these inputs must be given (e.g. a full
    ``request`` or a ``prompt``). Fan-out needs a ``seed`` input (copy i gets ``seed + i``)."""

    name: str
    description: str
    inputs: Mapping[str, Param]
    outputs: Mapping[str, ValueType]
    run: RunFunction
    one_of: tuple[str, ...] = field(default=())

    @property
    def can_fan_out(self) -> bool:
        return "seed" in self.inputs


def outputs(**types: str) -> dict[str, ValueType]:
    return {name: parse_type(text) for name, text in types.items()}
