"""gRPC RunWorkflow: WorkflowRequest inputs -> Python values, workflow events -> WorkflowResponse protos."""

from __future__ import annotations

from typing import Any

from deployments.workflow_values import declared_input, value_from_proto, value_to_proto
from pipelines.workflow.events import StepFinished, StepProgress, StepStarted, WorkflowEvent, WorkflowResult
from pipelines.workflow.spec import Workflow
from triptych.types import ImageProgress, TextDelta
from triptych.v1 import triptych_pb2 as pb


def workflow_inputs_from_proto(message: pb.WorkflowRequest, workflow: Workflow) -> dict[str, Any]:
    inputs = {}
    for name, value in message.inputs.items():
        spec = declared_input(workflow, name)
        inputs[name] = value_from_proto(value, spec.type, f"inputs.{name}")
    return inputs


def workflow_event_to_proto(event: WorkflowEvent) -> pb.WorkflowResponse | None:
    """None for progress with no client-facing form (e.g. a chat step's usage record)."""
    if isinstance(event, StepStarted):
        return _step(event.step, "started", at_ms=event.started_ms)
    if isinstance(event, StepFinished):
        return _step(event.step, "finished", at_ms=event.ended_ms, cache_hit=bool(event.cache_hit))
    if isinstance(event, WorkflowResult):
        return pb.WorkflowResponse(result=pb.WorkflowResult(
            outputs={name: value_to_proto(value) for name, value in event.outputs.items()},
            steps=[pb.WorkflowStep(name=s.step, started_ms=s.started_ms, ended_ms=s.ended_ms,
                                   cache_hit=bool(s.cache_hit)) for s in event.steps],
        ))  # fmt: skip
    if isinstance(event, StepProgress):
        if isinstance(event.event, TextDelta) and event.event.text:
            return _step(event.step, "progress", copy=event.copy, text=event.event.text)
        if isinstance(event.event, ImageProgress):
            return _step(event.step, "progress", copy=event.copy, denoise_step=event.event.step,
                         total_steps=event.event.total_steps)
        return None
    raise TypeError(f"unknown workflow event {type(event).__name__}")


def _step(step: str, state: str, **fields: Any) -> pb.WorkflowResponse:
    return pb.WorkflowResponse(step=pb.WorkflowStepEvent(step=step, state=state, **fields))
