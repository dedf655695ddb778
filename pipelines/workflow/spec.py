"""A workflow as data: named typed inputs, a DAG of steps (one operation each), named outputs.

Frozen dataclasses made by ``pipelines.workflow.load`` from YAML and checked by
``pipelines.workflow.validate``; the executor only ever sees validated ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.workflow.types import ValueType

INPUTS = "inputs"  # the reference prefix of request inputs: $inputs.prompt


@dataclass(frozen=True)
class Ref:
    """``$step.output`` (an earlier step's output) or ``$inputs.name`` (a request input)."""

    step: str
    output: str

    @property
    def is_input(self) -> bool:
        return self.step == INPUTS

    def __str__(self) -> str:
        return f"${self.step}.{self.output}"


@dataclass(frozen=True)
class InputSpec:
    """A request input. ``required`` is False when the file gave a ``default`` or ``optional: true``
    (an optional input without a default is simply not passed on to the steps that use it)."""

    name: str
    type: ValueType
    required: bool = True
    default: Any = None
    description: str = ""


@dataclass(frozen=True)
class Step:
    """One operation call. ``args`` (the YAML ``with:``) maps op input names to a Ref or a literal;
    ``fan_out`` runs ``n`` copies with seeds ``seed + i`` (then every output is a list)."""

    name: str
    op: str
    args: Mapping[str, Ref | Any]
    fan_out: Ref | int | None = None
    timeout_s: float | None = None

    def refs(self) -> list[Ref]:
        """Every reference this step reads, ``fan_out`` included."""
        refs = [value for value in self.args.values() if isinstance(value, Ref)]
        return refs + ([self.fan_out] if isinstance(self.fan_out, Ref) else [])

    def depends_on(self) -> set[str]:
        """Names of the steps whose outputs this step needs."""
        return {ref.step for ref in self.refs() if not ref.is_input}


@dataclass(frozen=True)
class OutputRef:
    """A workflow output: the step output it returns and (once validated) its type."""

    name: str
    ref: Ref
    type: ValueType | None = None


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    inputs: tuple[InputSpec, ...]
    steps: tuple[Step, ...]
    outputs: tuple[OutputRef, ...]
    source: str  # the file it came from (built-ins: their path in the repo)
    builtin: bool = False

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def step(self, name: str) -> Step | None:
        return next((step for step in self.steps if step.name == name), None)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/workflows`` lists: name, description, typed inputs and outputs."""
        inputs: dict[str, Mapping[str, Any]] = {}
        for spec in self.inputs:
            entry: dict[str, Any] = {"type": str(spec.type), "required": spec.required}
            if spec.default is not None:
                entry["default"] = spec.default
            if spec.description:
                entry["description"] = spec.description
            inputs[spec.name] = entry
        return {
            "name": self.name,
            "description": self.description,
            "inputs": inputs,
            "outputs": {out.name: {"type": str(out.type)} for out in self.outputs},
        }


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow file: ``<file>: <where>: <what>``."""

    source: str
    where: str  # "step 'paint'", "inputs.n", "outputs.image", "steps" or "file"
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.where}: {self.message}"
