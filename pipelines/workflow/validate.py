"""Check a parsed workflow before anything runs, reporting every problem of the file at once.

Like ComfyUI's per-node prompt validation and Triton's ensemble checks: unknown operation, unknown or
missing op input, a reference to a missing request input / step / output, a cycle, a type mismatch
between an output and the input it feeds, a duplicate step name, fan-out on an op without a seed,
and a workflow output that nothing produces. Each ``Problem`` names the file, the step (or input /
output) and what is wrong. A valid workflow comes back with its outputs' types filled in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipelines.workflow.ops import OPS, Operation
from pipelines.workflow.spec import INPUTS, OutputRef, Problem, Ref, Step, Workflow
from pipelines.workflow.types import (
    ValueType,
    assignable,
    bind,
    conforms,
    has_variable,
    list_of,
    substitute,
    type_of_literal,
)

INT = ValueType("int")


def validate_workflow(
    workflow: Workflow, ops: Mapping[str, Operation] = OPS
) -> tuple[Workflow, list[Problem]]:
    """(the workflow with typed outputs, every problem found); valid when the list is empty."""
    return _Checker(workflow, ops).run()


class _Checker:
    def __init__(self, workflow: Workflow, ops: Mapping[str, Operation]):
        self.workflow = workflow
        self.ops = ops
        self.problems: list[Problem] = []
        self.steps: dict[str, Step] = {}
        self.output_types: dict[str, dict[str, ValueType] | None] = {}  # None: unknown (op errors)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.workflow.source, where, message))

    def run(self) -> tuple[Workflow, list[Problem]]:
        for step in self.workflow.steps:
            where = _where(step)
            if step.name == INPUTS:
                self.problem(where, f"'{INPUTS}' is reserved for request inputs ($inputs.NAME); rename the step")
            elif step.name in self.steps:
                self.problem(where, "duplicate step name; step names must be unique")
            else:
                self.steps[step.name] = step
        order, cyclic = self._order()
        for name in order:
            self._check_step(self.steps[name])
        for name in cyclic:
            self.output_types[name] = None
            self._check_step_signature(self.steps[name])
        outputs = tuple(self._check_output(out) for out in self.workflow.outputs)
        return dataclasses.replace(self.workflow, outputs=outputs), self.problems

    def _order(self) -> tuple[list[str], list[str]]:
        """Steps in dependency order (Kahn), and the steps on or behind a cycle (cycles reported)."""
        deps = {name: step.depends_on() & self.steps.keys() for name, step in self.steps.items()}
        order: list[str] = []
        ready = [name for name, needs in deps.items() if not needs]
        remaining = {name: set(needs) for name, needs in deps.items() if needs}
        while ready:
            name = ready.pop(0)
            order.append(name)
            for other, needs in list(remaining.items()):
                needs.discard(name)
                if not needs:
                    del remaining[other]
                    ready.append(other)
        for name in remaining:  # on a cycle, or waiting behind one (only the former is reported)
            cycle = _cycle_through(name, deps)
            if cycle is not None:
                self.problem(_where(self.steps[name]), f"is part of a cycle: {' -> '.join([*cycle, name])}")
        return order, list(remaining)

    def _check_step_signature(self, step: Step) -> Operation | None:
        """Op exists, inputs known, required inputs and one-of rules kept; the op or None."""
        where = _where(step)
        op = self.ops.get(step.op)
        if op is None:
            self.problem(where, f"unknown operation {step.op!r}; known: {', '.join(sorted(self.ops))}")
            return None
        for name in step.args:
            if name not in op.inputs:
                self.problem(where, f"{step.op} has no input {name!r}; its inputs: {', '.join(op.inputs)}")
        for name, param in op.inputs.items():
            if param.required and name not in step.args:
                self.problem(where, f"missing required input {name!r} of {step.op}")
        if op.one_of:
            given = [name for name in op.one_of if name in step.args]
            if len(given) != 1:
                got = ", ".join(given) if given else "none"
                self.problem(where, f"{step.op} takes exactly one of {', '.join(op.one_of)} (got {got})")
        if step.fan_out is not None and not op.can_fan_out:
            self.problem(where, f"fan_out needs an op with a seed input; {step.op} has none")
        return op

    def _check_step(self, step: Step) -> None:
        op = self._check_step_signature(step)
        self.output_types[step.name] = None
        if op is None:
            return
        where = _where(step)
        bindings: dict[str, ValueType] = {}
        for name, value in step.args.items():
            param = op.inputs.get(name)
            if param is None:
                continue
            if isinstance(value, Ref):
                actual = self._ref_type(value, where, f"input {name!r}", required=param.required)
                if actual is not None and not bind(param.type, actual, bindings):
                    self.problem(where, f"input {name!r} of {step.op} takes {param.type}, but {value} is {actual}")
            else:
                self._check_literal(where, f"input {name!r} of {step.op}", value, param.type, bindings)
        self._check_fan_out(step, where)
        types: dict[str, ValueType] = {}
        for name, pattern in op.outputs.items():
            concrete = substitute(pattern, bindings)
            if concrete is not None:
                types[name] = list_of(concrete) if step.fan_out is not None else concrete
        self.output_types[step.name] = types

    def _check_literal(self, where: str, what: str, value: Any, expected: ValueType, bindings: dict) -> None:
        if has_variable(expected):
            actual = type_of_literal(value)
            if actual is None or not bind(expected, actual, bindings):
                self.problem(where, f"{what} takes {expected}, got the literal {_show(value)}")
        elif not conforms(value, expected):
            hint = "; images come from $inputs or a step, never a literal" if "image" in str(expected) else ""
            self.problem(where, f"{what} takes {expected}, got the literal {_show(value)}{hint}")

    def _check_fan_out(self, step: Step, where: str) -> None:
        fan_out = step.fan_out
        if isinstance(fan_out, Ref):
            actual = self._ref_type(fan_out, where, "fan_out", required=True)
            if actual is not None and not assignable(actual, INT):
                self.problem(where, f"fan_out takes int, but {fan_out} is {actual}")
        elif fan_out is not None and (not conforms(fan_out, INT) or fan_out < 1):
            self.problem(where, f"fan_out must be an int >= 1 or a reference, got {_show(fan_out)}")

    def _ref_type(self, ref: Ref, where: str, what: str, *, required: bool) -> ValueType | None:
        """The type a reference reads, or None (after a problem, or when its step had errors)."""
        if ref.is_input:
            spec = self.workflow.input(ref.output)
            if spec is None:
                declared = ", ".join(s.name for s in self.workflow.inputs) or "none"
                self.problem(where, f"{what} refers to {ref}, but the workflow declares no input "
                             f"{ref.output!r} (inputs: {declared})")  # fmt: skip
                return None
            if required and not spec.required and spec.default is None:
                self.problem(where, f"{what} needs a value, but {ref} is optional without a default")
            return spec.type
        if ref.step not in self.steps:
            self.problem(where, f"{what} refers to {ref}, but there is no step {ref.step!r}")
            return None
        types = self.output_types.get(ref.step)
        if types is None:  # that step's op is unknown or it sits on a cycle: already reported
            return None
        if ref.output not in types:
            op = self.steps[ref.step].op
            self.problem(where, f"{what} refers to {ref}, but {op} step {ref.step!r} has no output "
                         f"{ref.output!r}; its outputs: {', '.join(types)}")  # fmt: skip
            return None
        return types[ref.output]

    def _check_output(self, out: OutputRef) -> OutputRef:
        where = f"outputs.{out.name}"
        if not out.ref.is_input and out.ref.step not in self.steps:
            self.problem(where, f"is never produced: {out.ref} names no step (steps: {', '.join(self.steps)})")
            return out
        return dataclasses.replace(out, type=self._ref_type(out.ref, where, "the output", required=False))


def _cycle_through(start: str, deps: dict[str, set[str]]) -> list[str] | None:
    """The shortest dependency cycle from ``start`` back to itself (breadth first), or None."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for dep in sorted(deps.get(node, ())):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if dep not in parents:
                    parents[dep] = node
                    following.append(dep)
        frontier = following
    return None


def _where(step: Step) -> str:
    return f"step {step.name!r}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
