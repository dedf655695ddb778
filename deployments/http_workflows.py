"""Triptych's own HTTP workflow API: `POST /v1/workflows/{name}` bodies -> inputs, events -> JSON / SSE.

Body: `{"inputs": {...}, "stream": false}`. The answer: `{"workflow", "outputs": {...}, "steps":
[{"name", "started_ms", "ended_ms", "cache_hit"}]}`; with `"stream": true` an SSE stream of step
events (`{"type": "step.started" | "step.progress" | "step.finished", "step", ...}`), then
`{"type": "result", ...}` (the non-stream body), then `data: [DONE]`.
"""

from __future__ import annotations

import json
from typing import Any

from deployments.workflow_values import declared_input, value_from_json, value_to_json
from pipelines.workflow.events import StepFinished, StepProgress, StepStarted, WorkflowEvent, WorkflowResult
from pipelines.workflow.spec import Workflow
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import ImageProgress, TextDelta


def parse_workflow_body(body: Any, workflow: Workflow, limits: Limits) -> tuple[dict[str, Any], bool]:
    """(inputs as Python values, stream). Unknown or mistyped inputs raise RequestError naming them;
    missing required ones are the executor's to report (it knows the defaults)."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object like {\"inputs\": {...}}")
    unknown = sorted(set(body) - {"inputs", "stream"})
    if unknown:
        raise RequestError(unknown[0], "unknown field; a workflow body has 'inputs' and 'stream'")
    raw_inputs = body.get("inputs", {})
    if not isinstance(raw_inputs, dict):
        raise RequestError("inputs", "must be an object mapping input names to values")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", "must be a boolean")
    inputs = {}
    for name, raw in raw_inputs.items():
        spec = declared_input(workflow, name)
        inputs[name] = value_from_json(raw, spec.type, f"inputs.{name}", limits)
    return inputs, stream


def result_body(result: WorkflowResult) -> dict[str, Any]:
    return {
        "workflow": result.workflow,
        "outputs": {name: value_to_json(value) for name, value in result.outputs.items()},
        "steps": [step.as_dict() for step in result.steps],
    }


def event_body(event: WorkflowEvent) -> dict[str, Any] | None:
    """One SSE event's JSON; None for progress that has no client-facing form."""
    if isinstance(event, StepStarted):
        return {"type": "step.started", "step": event.step, "op": event.op, "at_ms": event.started_ms,
                "copies": event.copies}  # fmt: skip
    if isinstance(event, StepFinished):
        record = event.as_dict()
        return {"type": "step.finished", "step": record.pop("name"), **record}
    if isinstance(event, WorkflowResult):
        return {"type": "result", **result_body(event)}
    if isinstance(event, StepProgress):
        progress = _progress(event.event)
        return None if progress is None else {"type": "step.progress", "step": event.step, "copy": event.copy,
                                              **progress}  # fmt: skip
    raise TypeError(f"unknown workflow event {type(event).__name__}")


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _progress(event: Any) -> dict[str, Any] | None:
    if isinstance(event, TextDelta):
        return {"text": event.text} if event.text else None
    if isinstance(event, ImageProgress):
        return {"denoise_step": event.step, "total_steps": event.total_steps}
    return None  # e.g. a chat step's ChatUsage: its cache_hit is in the step's finished record
