"""Client retries (launcher.retry, launcher.grpc_retry) against a scripted in-process gRPC server: refusals
before the first message are retried with backoff up to the policy's count and counted; an error after the
first message, or one that is not a refusal, is never retried. No Ray; the server binds port 0."""

from concurrent import futures

import grpc
import pytest

from launcher.client import TriptychClient
from launcher.retry import NO_RETRIES, RetryPolicy, call_with_retries
from triptych.v1 import triptych_pb2 as pb
from triptych.v1 import triptych_pb2_grpc as pb_grpc

FAST = RetryPolicy(retries=3, base_delay_s=0.0)


class ScriptedTriptych(pb_grpc.TriptychServicer):
    """Each Chat call takes the next entry of `script`: a StatusCode (or a (code, details) pair) to
    refuse with before any message, "mid" to fail after one message, or "ok" to stream two messages."""

    def __init__(self):
        self.script: list = []
        self.calls = 0

    def Chat(self, request, context):
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, tuple):  # (code, details)
            context.abort(*step)
        if isinstance(step, grpc.StatusCode):
            context.abort(step, f"scripted {step.name}")
        yield pb.ChatResponse(delta="a")
        if step == "mid":
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted failure after the first message")
        yield pb.ChatResponse(delta="b", finish_reason="stop")


@pytest.fixture(scope="module")
def scripted():
    servicer = ScriptedTriptych()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TriptychServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")  # the OS picks and binds at once: no race
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def run(servicer, target, script, policy=FAST):
    servicer.script, servicer.calls = list(script), 0
    with TriptychClient(target, timeout_s=10, retry=policy) as client:
        stream = client.chat("q")
        try:
            return "".join(m.delta for m in stream), None, stream.retries, client.retries, servicer.calls
        except grpc.RpcError as exc:
            return None, exc.code(), stream.retries, client.retries, servicer.calls


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_refusals_before_the_first_message_are_retried_and_counted(scripted, code):
    assert run(*scripted, [code, code, code]) == ("ab", None, 3, 3, 4)


def test_the_fourth_refusal_reaches_the_caller(scripted):
    code = grpc.StatusCode.UNAVAILABLE
    assert run(*scripted, [code] * 4) == (None, code, 3, 3, 4)


def test_no_retry_after_the_first_message(scripted):
    assert run(*scripted, ["mid"]) == (None, grpc.StatusCode.UNAVAILABLE, 0, 0, 1)


def test_other_errors_are_not_retried(scripted):
    code = grpc.StatusCode.INVALID_ARGUMENT
    assert run(*scripted, [code]) == (None, code, 0, 0, 1)


def test_a_message_over_the_size_limit_is_not_retried(scripted):
    """RESOURCE_EXHAUSTED from the proxy's size check would be refused again: not a refusal for now."""
    refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (40000000 vs. 33554432)")
    assert run(*scripted, [refused]) == (None, grpc.StatusCode.RESOURCE_EXHAUSTED, 0, 0, 1)


def test_retries_can_be_turned_off(scripted):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert run(*scripted, [code], NO_RETRIES) == (None, code, 0, 0, 1)


def test_backoff_grows_exponentially_under_full_jitter():
    policy = RetryPolicy(retries=5, base_delay_s=0.1, multiplier=2.0, max_delay_s=0.5)
    slept: list[float] = []
    attempts = iter([ConnectionError()] * 5 + ["done"])

    def attempt():
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert call_with_retries(attempt, lambda e: isinstance(e, ConnectionError), policy, sleep=slept.append) == "done"
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5]  # base * 2**n, capped at max_delay_s
    assert len(slept) == 5 and all(0 <= s <= c for s, c in zip(slept, ceilings))


def test_a_policy_refuses_negative_retries():
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
