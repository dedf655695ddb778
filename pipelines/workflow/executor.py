"""Run a validated workflow: every step an asyncio task that starts as soon as its inputs are ready.

``run_workflow`` is an async generator of ``StepStarted`` / ``StepProgress`` / ``StepFinished``
events, ending with one ``WorkflowResult``. A fanned-out step runs its copies concurrently (the
stage deployments batch them). A failed step fails the workflow with an error naming it (a request
error stays a ``RequestError``, an overload an ``OverloadedError``, anything else becomes a
``WorkflowError``); past the workflow's ``timeout_s`` or a step's own ``timeout_s`` it raises
``DeadlineExceeded``. When the consumer stops iterating (``aclose()``, or its task is cancelled:
the client went away) every running step is cancelled, and the op closes its stage stream, which
stops the decoder or denoiser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from denoisers.params import draw_seed
from pipelines.workflow.events import StepFinished, StepProgress, StepStarted, WorkflowEvent, WorkflowResult
from pipelines.workflow.inputs import MAX_FAN_OUT, check_inputs
from pipelines.workflow.ops import OPS, OpContext, Operation, OpOutput
from pipelines.workflow.spec import Ref, Step, Workflow
from triptych.errors import (
    ContextLengthError,
    DeadlineExceeded,
    OverloadedError,
    RequestError,
    WorkflowError,
)

_DONE = object()  # the driver's last word on the event queue
_ABSENT = object()  # an optional request input that was not given


async def run_workflow(
    workflow: Workflow,
    inputs: Mapping[str, Any],
    context: OpContext,
    *,
    timeout_s: float | None = None,
    ops: Mapping[str, Operation] = OPS,
    step_names_in_errors: bool = True,
) -> AsyncIterator[WorkflowEvent]:
    """Stream the events of one run; the last one is the ``WorkflowResult``.

    ``inputs`` go through ``check_inputs`` first (a RequestError naming the input, before any step
    runs; call ``check_inputs`` yourself to fail before a response starts streaming). The chat,
    images and embeddings APIs run their one-step built-ins with ``step_names_in_errors=False``:
    their clients know no steps, so a request error reads as it always did."""
    run = _Run(workflow, check_inputs(workflow, inputs), context, ops, step_names_in_errors)
    driver = asyncio.create_task(run.drive(timeout_s), name=f"workflow {workflow.name}")
    try:
        while (event := await run.queue.get()) is not _DONE:
            yield event
        yield await driver
    finally:
        if not driver.done():  # the consumer went away: stop every step
            driver.cancel()
            await asyncio.wait([driver])


async def run_to_result(
    workflow: Workflow, inputs: Mapping[str, Any], context: OpContext, *, timeout_s: float | None = None
) -> WorkflowResult:
    """Run to the end and return only the result (the non-streaming APIs)."""
    async with aclosing(run_workflow(workflow, inputs, context, timeout_s=timeout_s)) as events:
        async for event in events:
            if isinstance(event, WorkflowResult):
                return event
    raise RuntimeError(f"workflow {workflow.name!r} ended without a result")


class _Run:
    """The state of one run: step tasks, their outputs (futures), records and the event queue."""

    def __init__(self, workflow: Workflow, inputs: dict[str, Any], context: OpContext,
                 ops: Mapping[str, Operation], step_names_in_errors: bool):  # fmt: skip
        self.workflow = workflow
        self.step_names_in_errors = step_names_in_errors
        self.inputs = inputs
        self.context = context
        self.ops = ops
        self.queue: asyncio.Queue = asyncio.Queue()
        self.start = time.perf_counter()
        loop = asyncio.get_running_loop()
        self.results: dict[str, asyncio.Future] = {step.name: loop.create_future() for step in workflow.steps}
        self.records: dict[str, StepFinished] = {}
        self.running: set[str] = set()
        self.first_error: BaseException | None = None

    def now_ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)

    async def drive(self, timeout_s: float | None) -> WorkflowResult:
        tasks = [asyncio.create_task(self.step(step), name=f"step {step.name}") for step in self.workflow.steps]
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except TimeoutError:
            running = ", ".join(sorted(self.running)) or "none"
            raise DeadlineExceeded(f"workflow {self.workflow.name!r} ran past its {timeout_s} s limit "
                                   f"(steps still running: {running})") from None  # fmt: skip
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            self.queue.put_nowait(_DONE)
        if self.first_error is not None:
            raise self.first_error
        values = {out.name: await self.value(out.ref) for out in self.workflow.outputs}
        outputs = {name: value for name, value in values.items() if value is not _ABSENT}
        steps = tuple(self.records[step.name] for step in self.workflow.steps)
        return WorkflowResult(self.workflow.name, outputs, steps)

    async def value(self, value: Any) -> Any:
        """A literal as is; a reference once its step has finished (``_ABSENT``: optional, not given)."""
        if not isinstance(value, Ref):
            return value
        if value.is_input:
            return self.inputs.get(value.output, _ABSENT)
        outputs = await asyncio.shield(self.results[value.step])
        return outputs[value.output]

    async def step(self, step: Step) -> None:
        args = {name: v for name, raw in step.args.items() if (v := await self.value(raw)) is not _ABSENT}
        copies = None if step.fan_out is None else await self.value(step.fan_out)
        op = self.ops[step.op]
        started = self.now_ms()
        self.running.add(step.name)
        self.queue.put_nowait(StepStarted(step.name, step.op, started, copies or 1))
        try:
            async with asyncio.timeout(step.timeout_s) as deadline:
                if copies is None:
                    output = await self.call(step, op, args, 0)
                    values, cache_hit = output.values, output.cache_hit
                else:
                    values, cache_hit = await self.fan_out(step, op, args, copies)
        except Exception as exc:  # noqa: BLE001 - re-raised below, with the step's name when asked
            if isinstance(exc, TimeoutError) and deadline.expired():
                exc = DeadlineExceeded(f"step {step.name!r} ran past its timeout_s of {step.timeout_s} s")
            error = _named(step.name, exc) if self.step_names_in_errors else exc
            self.first_error = self.first_error or error
            raise error from (None if error is exc else exc)
        finally:
            self.running.discard(step.name)
        record = StepFinished(step.name, started, self.now_ms(), cache_hit)
        self.records[step.name] = record
        self.queue.put_nowait(record)
        self.results[step.name].set_result(values)

    async def call(self, step: Step, op: Operation, args: dict[str, Any], copy: int) -> OpOutput:
        """One op run: its progress events onto the queue, its ``OpOutput`` back."""
        async with aclosing(op.run(self.context, args)) as events:
            async for event in events:
                if isinstance(event, OpOutput):
                    return event
                self.queue.put_nowait(StepProgress(step.name, event, copy))
        raise RuntimeError(f"operation {op.name!r} ended without an output")

    async def fan_out(self, step: Step, op: Operation, args: dict[str, Any], copies: int):
        """``copies`` concurrent runs with seeds ``seed + i``: each output becomes the list of the
        copies' values, in seed order; cache_hit when every copy hit."""
        if not isinstance(copies, int) or not 1 <= copies <= MAX_FAN_OUT:
            raise ValueError(f"fan_out must be in 1..{MAX_FAN_OUT}, got {copies!r}")
        base = args.get("seed")
        base = draw_seed() if base is None else base
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.call(step, op, {**args, "seed": base + i}, i))
                         for i in range(copies)]  # fmt: skip
        except BaseExceptionGroup as group_error:  # one copy failed: the others were cancelled
            raise group_error.exceptions[0] from None
        outputs = [task.result() for task in tasks]
        values = {name: [output.values[name] for output in outputs] for name in op.outputs}
        hits = [output.cache_hit for output in outputs if output.cache_hit is not None]
        return values, (all(hits) if hits else None)


def _named(step: str, exc: BaseException) -> BaseException:
    """The step's error with the step's name in it, keeping the kind the ingress maps to a status."""
    if isinstance(exc, DeadlineExceeded | WorkflowError):
        return exc
    if isinstance(exc, RequestError):
        kind = ContextLengthError if isinstance(exc, ContextLengthError) else RequestError
        return kind(exc.field, f"step {step!r}: {exc.message}")
    if isinstance(exc, OverloadedError):
        return OverloadedError(f"step {step!r}: {exc}")
    return WorkflowError(step, f"{type(exc).__name__}: {exc}")
