"""Request-time checking of a workflow's inputs: every error names the input (``inputs.<name>``).

Values are Python values (text str, image bytes, embedding tensors, lists); the ingress turns JSON
(``pipelines.workflow.json_values``) or protos into them first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from encoders.image_io import load_image
from pipelines.workflow.spec import Workflow
from pipelines.workflow.types import ValueType, conforms
from triptych.config import Limits
from triptych.errors import RequestError

MAX_FAN_OUT = 16  # copies one fanned-out step may run for a request


def check_inputs(workflow: Workflow, inputs: Any, limits: Limits | None = None) -> dict[str, Any]:
    """The inputs the steps see (defaults filled in, ints widened to float where a float is declared).

    Raises ``RequestError("inputs.<name>", ...)`` for an undeclared, missing or mistyped input and for
    a fan-out count outside 1..MAX_FAN_OUT; with ``limits``, every image is decoded and checked
    (``encoders.image_io.load_image``, CPU work: call it off the event loop)."""
    if not isinstance(inputs, Mapping):
        raise RequestError("inputs", f"must be an object of named inputs, got {type(inputs).__name__}")
    declared = ", ".join(spec.name for spec in workflow.inputs) or "none"
    for name in inputs:
        if workflow.input(name) is None:
            raise RequestError(f"inputs.{name}", f"workflow {workflow.name!r} has no such input (inputs: {declared})")
    values: dict[str, Any] = {}
    for spec in workflow.inputs:
        field = f"inputs.{spec.name}"
        value = inputs.get(spec.name)
        if value is None:
            if spec.default is not None:
                values[spec.name] = spec.default
            elif spec.required:
                raise RequestError(field, f"is required ({spec.type})")
            continue
        if not conforms(value, spec.type):
            raise RequestError(field, f"must be {spec.type}, got {_kind(value)}")
        if limits is not None:
            _check_images(value, spec.type, field, limits)
        values[spec.name] = float(value) if spec.type.name == "float" else value
    _check_fan_outs(workflow, values)
    return values


def _check_images(value: Any, value_type: ValueType, field: str, limits: Limits) -> None:
    if isinstance(value, bytes | bytearray) and any(t.name == "image" for t in value_type.options()):
        load_image(bytes(value), field, limits.max_image_pixels, limits.max_image_bytes)
    elif isinstance(value, list | tuple):
        items = [t.args[0] for t in value_type.options() if t.name == "list"]
        for i, item in enumerate(value):
            for item_type in items:
                _check_images(item, item_type, f"{field}[{i}]", limits)


def _check_fan_outs(workflow: Workflow, values: dict[str, Any]) -> None:
    for step in workflow.steps:
        ref = step.fan_out
        if ref is not None and not isinstance(ref, int) and ref.is_input and ref.output in values:
            count = values[ref.output]
            if not 1 <= count <= MAX_FAN_OUT:
                raise RequestError(f"inputs.{ref.output}", f"must be in 1..{MAX_FAN_OUT} (copies of step "
                                   f"{step.name!r}), got {count}")  # fmt: skip


def _kind(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:60]
