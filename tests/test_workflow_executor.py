"""The workflow executor with fake operations (no stages, no Ray): independent steps overlap, a step
waits for its inputs, fan-out runs n copies concurrently in seed order, a failing step's error names
it, step and workflow timeouts, cancellation reaches running steps, request-time input errors."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.workflow import (
    StepFinished,
    StepProgress,
    StepStarted,
    WorkflowResult,
    check_inputs,
    run_workflow,
)
from pipelines.workflow.ops import OpContext, Operation, OpOutput
from pipelines.workflow.ops.operation import outputs, param
from tests.workflow_fakes import workflow_of
from triptych.errors import DeadlineExceeded, RequestError, WorkflowError

BOUND_S = 30  # a bound so a broken executor fails instead of hanging; never reached when it works


class Board:
    """Shared state of the fake ops: named events, and what the ops saw."""

    def __init__(self):
        self.events: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []
        self.started: list[str] = []
        self.args: list[dict] = []

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())


def fake_ops(board: Board) -> dict[str, Operation]:
    async def handshake(context, args):
        """Set my event, then wait for the other's: finishes only if the other step runs meanwhile."""
        board.event(args["mine"]).set()
        await board.event(args["other"]).wait()
        yield OpOutput({"done": args["mine"]})

    async def echo(context, args):
        board.args.append(dict(args))
        yield f"progress {args.get('value')}"
        yield OpOutput({"value": args.get("value", 0), "seed": args.get("seed", -1)}, cache_hit=True)

    async def gather(context, args):
        """A fan-out copy: waits until `count` copies have started (so they all run at once)."""
        board.started.append(f"copy {args['seed']}")
        if len(board.started) == args["count"]:
            board.event("all started").set()
        await board.event("all started").wait()
        yield OpOutput({"value": args["seed"] * 10, "seed": args["seed"]}, cache_hit=args["seed"] % 2 == 0)

    async def hang(context, args):
        board.started.append(args["label"])
        board.event(f"{args['label']} started").set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            board.cancelled.append(args["label"])
            raise
        yield OpOutput({})

    async def fail(context, args):
        await board.event(args.get("after", "never")).wait() if "after" in args else None
        if args.get("bad_request"):
            raise RequestError("prompt", "must not be empty")
        raise ValueError("boom")
        yield

    def op(name, run, inputs, outs, **kw):
        return Operation(name, name, {k: param(v) for k, v in inputs.items()}, outputs(**outs), run, **kw)

    return {
        "handshake": op("handshake", handshake, {"mine": "text", "other": "text"}, {"done": "text"}),
        "echo": op("echo", echo, {"value": "int", "seed": "int"}, {"value": "int", "seed": "int"}),
        "gather": op("gather", gather, {"count": "int", "seed": "int"}, {"value": "int", "seed": "int"}),
        "hang": op("hang", hang, {"label": "text"}, {"out": "int"}),
        "fail": op("fail", fail, {"after": "text", "bad_request": "bool"}, {"out": "int"}),
    }


@pytest.fixture
def board():
    return Board()


async def collect(workflow, inputs, board, **kw) -> list:
    return [event async for event in run_workflow(workflow, inputs, OpContext(), ops=fake_ops(board), **kw)]


def build(text: str, board: Board):
    return workflow_of(text, fake_ops(board))


def test_independent_steps_overlap(board):
    workflow = build("""
name: overlap
steps:
  - {name: a, op: handshake, with: {mine: A, other: B}}
  - {name: b, op: handshake, with: {mine: B, other: A}}
outputs: {a: $a.done, b: $b.done}
""", board)
    events = asyncio.run(collect(workflow, {}, board, timeout_s=BOUND_S))
    result = events[-1]
    assert isinstance(result, WorkflowResult)
    assert result.outputs == {"a": "A", "b": "B"}
    a, b = result.steps
    assert (a.step, b.step) == ("a", "b")
    assert a.started_ms <= b.ended_ms and b.started_ms <= a.ended_ms  # both ran at the same time
    assert [type(e) for e in events[:2]] == [StepStarted, StepStarted]  # both started before either ended


def test_a_step_starts_after_the_steps_it_reads_and_streams_progress(board):
    workflow = build("""
name: chain
inputs: {x: int}
steps:
  - {name: second, op: echo, with: {value: $first.value}}
  - {name: first, op: echo, with: {value: $inputs.x}}
outputs: {y: $second.value}
""", board)
    events = asyncio.run(collect(workflow, {"x": 7}, board))
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in events]
    assert kinds == [("StepStarted", "first"), ("StepProgress", "first"), ("StepFinished", "first"),
                     ("StepStarted", "second"), ("StepProgress", "second"), ("StepFinished", "second"),
                     ("WorkflowResult", None)]
    assert events[1] == StepProgress("first", "progress 7", 0)
    result = events[-1]
    assert result.outputs == {"y": 7}
    second, first = result.steps  # file order
    assert second.started_ms >= first.ended_ms
    assert first.cache_hit is True and first.as_dict() == {
        "name": "first", "started_ms": first.started_ms, "ended_ms": first.ended_ms, "cache_hit": True}


def test_fan_out_runs_n_copies_at_once_in_seed_order(board):
    workflow = build("""
name: fan
inputs: {n: {type: int, default: 3}, seed: {type: int, optional: true}}
steps:
  - {name: copies, op: gather, fan_out: $inputs.n, with: {count: $inputs.n, seed: $inputs.seed}}
outputs: {values: $copies.value, seeds: $copies.seed}
""", board)
    events = asyncio.run(collect(workflow, {"n": 4, "seed": 10}, board, timeout_s=BOUND_S))
    result = events[-1]
    assert result.outputs == {"values": [100, 110, 120, 130], "seeds": [10, 11, 12, 13]}
    assert events[0] == StepStarted("copies", "gather", events[0].started_ms, copies=4)
    assert result.steps[0].cache_hit is False  # odd seeds missed
    assert workflow.outputs[0].type is not None and str(workflow.outputs[0].type) == "list[int]"


def test_fan_out_without_a_seed_draws_one_and_counts_up(board):
    workflow = build("""
name: fan
inputs: {n: {type: int, default: 3}}
steps:
  - {name: copies, op: gather, fan_out: $inputs.n, with: {count: $inputs.n}}
outputs: {seeds: $copies.seed}
""", board)
    events = asyncio.run(collect(workflow, {}, board, timeout_s=BOUND_S))
    seeds = events[-1].outputs["seeds"]
    assert len(seeds) == 3 and seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


def test_a_failing_step_fails_the_workflow_naming_it_and_cancels_the_others(board):
    workflow = build("""
name: failing
steps:
  - {name: slow, op: hang, with: {label: slow}}
  - {name: broken, op: fail, with: {after: slow started}}
outputs: {x: $broken.out}
""", board)
    with pytest.raises(WorkflowError) as info:
        asyncio.run(collect(workflow, {}, board, timeout_s=BOUND_S))
    assert info.value.step == "broken"
    assert str(info.value) == "step 'broken' failed: ValueError: boom"
    assert board.cancelled == ["slow"]


def test_a_request_error_in_a_step_stays_a_request_error_with_the_step_named(board):
    workflow = build("""
name: failing
steps:
  - {name: paint, op: fail, with: {bad_request: true}}
outputs: {x: $paint.out}
""", board)
    with pytest.raises(RequestError) as info:
        asyncio.run(collect(workflow, {}, board))
    assert info.value.field == "prompt"
    assert info.value.message == "step 'paint': must not be empty"


def test_a_step_past_its_timeout_raises_deadline_exceeded_naming_it(board):
    workflow = build("""
name: slow
steps:
  - {name: stuck, op: hang, with: {label: stuck}, timeout_s: 0.05}
outputs: {x: $stuck.out}
""", board)
    with pytest.raises(DeadlineExceeded, match="step 'stuck' ran past its timeout_s of 0.05 s"):
        asyncio.run(collect(workflow, {}, board, timeout_s=BOUND_S))
    assert board.cancelled == ["stuck"]


def test_a_workflow_past_its_timeout_raises_deadline_exceeded_and_cancels_its_steps(board):
    workflow = build("""
name: slow
steps:
  - {name: stuck, op: hang, with: {label: stuck}}
  - {name: quick, op: echo, with: {value: 1}}
outputs: {x: $stuck.out}
""", board)
    with pytest.raises(DeadlineExceeded, match=r"workflow 'slow' ran past its 0.05 s limit \(steps still running: stuck\)"):
        asyncio.run(collect(workflow, {}, board, timeout_s=0.05))
    assert board.cancelled == ["stuck"]


HANGING = """
name: hanging
steps:
  - {name: left, op: hang, with: {label: left}}
  - {name: right, op: hang, with: {label: right}}
  - {name: after, op: echo, with: {value: $left.out}}
outputs: {x: $after.value}
"""


def test_closing_the_stream_cancels_every_running_step(board):
    workflow = build(HANGING, board)

    async def consume_then_leave():
        events = run_workflow(workflow, {}, OpContext(), ops=fake_ops(board))
        async for _ in events:
            if board.event("left started").is_set() and board.event("right started").is_set():
                break
            await asyncio.wait_for(board.event("right started").wait(), BOUND_S)
        await events.aclose()  # the client went away

    asyncio.run(consume_then_leave())
    assert sorted(board.cancelled) == ["left", "right"]
    assert board.args == []  # the step waiting on them never ran


def test_cancelling_the_consumer_cancels_every_running_step(board):
    workflow = build(HANGING, board)

    async def consume_in_a_task():
        async def consume():
            async for _ in run_workflow(workflow, {}, OpContext(), ops=fake_ops(board)):
                pass

        task = asyncio.create_task(consume())
        await asyncio.wait_for(board.event("left started").wait(), BOUND_S)
        await asyncio.wait_for(board.event("right started").wait(), BOUND_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(consume_in_a_task())
    assert sorted(board.cancelled) == ["left", "right"]


TYPED = """
name: typed
inputs:
  count: int
  ratio: {type: float, default: 0.5}
  label: {type: text, optional: true}
  seed: {type: int, optional: true}
  n: {type: int, default: 2}
steps:
  - {name: copies, op: echo, fan_out: $inputs.n, with: {value: $inputs.count, seed: $inputs.seed}}
outputs: {values: $copies.value}
"""


@pytest.mark.parametrize(("inputs", "field", "message"), [
    ({}, "inputs.count", "is required (int)"),
    ({"count": "3"}, "inputs.count", "must be int, got str '3'"),
    ({"count": True}, "inputs.count", "must be int, got bool True"),
    ({"count": 1, "ratio": "half"}, "inputs.ratio", "must be float"),
    ({"count": 1, "colour": "red"}, "inputs.colour", "workflow 'typed' has no such input (inputs: count, ratio, label, seed, n)"),
    ({"count": 1, "n": 0}, "inputs.n", "must be in 1..16 (copies of step 'copies'), got 0"),
    ({"count": 1, "n": 17}, "inputs.n", "must be in 1..16"),
])
def test_request_input_errors_name_the_input(board, inputs, field, message):
    workflow = build(TYPED, board)
    with pytest.raises(RequestError) as info:
        check_inputs(workflow, inputs)
    assert info.value.field == field
    assert info.value.message.startswith(message)
    with pytest.raises(RequestError):  # the executor checks them too, before any step runs
        asyncio.run(collect(workflow, inputs, board))
    assert board.args == []


def test_inputs_get_defaults_ints_widen_to_float_and_absent_optionals_are_not_passed(board):
    workflow = build(TYPED, board)
    assert check_inputs(workflow, {"count": 3, "ratio": 1}) == {"count": 3, "ratio": 1.0, "n": 2}
    events = asyncio.run(collect(workflow, {"count": 3}, board))
    assert events[-1].outputs == {"values": [3, 3]}
    assert [set(args) for args in board.args] == [{"value", "seed"}] * 2  # seed: drawn by the fan-out
    assert isinstance(events[-2], StepFinished)


def test_inputs_must_be_a_mapping(board):
    with pytest.raises(RequestError) as info:
        check_inputs(build(TYPED, board), ["count"])
    assert info.value.field == "inputs"
