"""Edge admission: a chat or image request the stages cannot hold is refused the moment it reaches the
ingress (HTTP 503 / gRPC RESOURCE_EXHAUSTED), before its body is read and before it waits in any queue.

Why at the edge: without it the refusal came from the stage that was full (the decoder's Serve queue or
its engine), so a request that was going to be refused first waited for a worker thread to parse its
JSON, for its image to be encoded and for the ingress slots ahead of it; under a burst of fresh images
(or behind a decoder that had just restarted) a refusal took about as long as a served request. Here the
count of chats and images in flight in this ingress replica is checked first, in constant time, and the
request's deadline (`deployments.deadline`) starts.

The room per kind is what the stage behind it holds fully scaled: chats, the LLM decoder's maximum
replicas x its ``max_ongoing_requests``; images, the Denoiser's; shared between the ingress's minimum
replicas. Not the minimum replicas: the load past what the running replicas hold must reach the stage's
Serve queue, where the autoscaler sees it and adds replicas (with the minimum, the edge refused it and
the stage never scaled: tests/test_autoscaling.py). It is capped by the stage's own Serve queue
(``max_queued_requests``, unless -1), so an admitted request is not refused downstream for lack of room
even before the stage scales up: Serve's router counts every request it has not yet handed to a replica
as queued, so requests that arrive together pass through that queue, and a queue smaller than the room
would refuse some of them. The
ingress's own Serve limits must exceed the sum (``max_ongoing_requests``, and its ``max_queued_requests``
for the same reason), or Serve refuses or queues requests before this check sees them (the default
ingress takes 128; set ``max_queued_requests: -1`` to leave every refusal to this check).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable

import grpc

from deployments.deadline import client_timeout_s, start_deadline
from deployments.grpc_edge import require_api_key
from triptych.config import TriptychConfig
from triptych.errors import OverloadedError

HTTP_KINDS = {"/v1/chat/completions": "chat", "/v1/images/generations": "image"}


def admission_capacity(config: TriptychConfig) -> dict[str, int]:
    """Requests of each kind one ingress replica admits at once."""
    rooms = {}
    for kind, stage in (("chat", config.llm_decoder), ("image", config.denoiser)):
        held = stage.max_replicas * stage.max_ongoing_requests  # fully scaled (see the module docstring)
        room = held if stage.max_queued_requests < 0 else min(held, stage.max_queued_requests)
        rooms[kind] = math.ceil(room / max(config.ingress.min_replicas, 1))
    return rooms


class Admission:
    """Counts the requests of each kind in flight in this replica and refuses one past its kind's room."""

    def __init__(self, capacity: dict[str, int], request_timeout_s: float | None):
        self.capacity = capacity
        self.request_timeout_s = request_timeout_s
        self.in_flight = dict.fromkeys(capacity, 0)
        self.refused = dict.fromkeys(capacity, 0)

    def enter(self, kind: str) -> None:
        """Admit one request of `kind` (the caller must `leave` it), or raise OverloadedError. Runs on the
        replica's event loop: no lock needed."""
        if self.in_flight[kind] >= self.capacity[kind]:
            self.refused[kind] += 1
            raise OverloadedError(f"{self.in_flight[kind]} {kind} requests in flight in this ingress replica, "
                                  f"as many as the stages behind it hold; retry later")
        self.in_flight[kind] += 1

    def leave(self, kind: str) -> None:
        self.in_flight[kind] -= 1

    def stats(self) -> dict:
        from ray import serve

        return {"capacity": dict(self.capacity), "in_flight": dict(self.in_flight), "refused": dict(self.refused),
                "replica": serve.get_replica_context().replica_id.unique_id}


_admission: Admission | None = None  # this replica's; one ingress replica per process


def configure_admission(config: TriptychConfig) -> Admission:
    """Called from the ingress's constructor: this replica's room per kind and request time limit."""
    global _admission
    _admission = Admission(admission_capacity(config), config.request_timeout_s)
    return _admission


def _overloaded_body(exc: OverloadedError) -> bytes:
    error = {"message": f"overloaded, retry later: {exc}", "type": "server_overloaded", "param": None, "code": None}
    return json.dumps({"error": error}).encode()


class AdmissionMiddleware:
    """Pure ASGI middleware: admits (or refuses) chat and image POSTs before the app reads their bodies,
    and holds the admission until the response, streamed or not, has been sent or the client has gone."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        kind = HTTP_KINDS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if kind is None or _admission is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        try:
            _admission.enter(kind)
        except OverloadedError as exc:
            body = _overloaded_body(exc)
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            start_deadline(_admission.request_timeout_s)
            await self.app(scope, receive, send)
        finally:
            _admission.leave(kind)


def admitted(kind: str) -> Callable:
    """Decorator for a gRPC streaming method of the ingress (whose `_admission` is this replica's): the API
    key, then admission (refused: RESOURCE_EXHAUSTED) and the request's deadline (the config's limit, or
    the client's ``triptych-timeout-s`` if sooner), held until the stream ends."""

    def wrap(method):
        @functools.wraps(method)
        async def run(self, message, grpc_context):
            # `self._admission`, not this module's global: Serve pickles this closure by value with a
            # copy of the globals it names, taken before any replica configured them.
            admission: Admission = self._admission
            require_api_key(grpc_context)
            try:
                admission.enter(kind)
            except OverloadedError as exc:
                grpc_context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                grpc_context.set_details(f"overloaded, retry later: {exc}")
                raise
            try:
                start_deadline(admission.request_timeout_s, client_timeout_s(grpc_context))
                async for response in method(self, message, grpc_context):
                    yield response
            finally:
                admission.leave(kind)

        return run

    return wrap


def drain(app_name: str, ingress_replicas: int, timeout_s: float) -> bool:
    """Wait until no chat or image request is in flight in any of the app's `ingress_replicas` ingress
    replicas (each seen at zero since the drain began), at most `timeout_s`; True when drained. Called
    before Serve is stopped, so a shutdown (SIGTERM to `triptych serve`) lets streams finish."""
    import time

    from ray import serve

    handle, idle, deadline = serve.get_app_handle(app_name), set(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = handle.admission_stats.remote().result(timeout_s=max(deadline - time.monotonic(), 0.1))
        if any(stats["in_flight"].values()):
            idle.discard(stats["replica"])
        else:
            idle.add(stats["replica"])
        if len(idle) >= ingress_replicas:
            return True
        time.sleep(0.1)  # the poll period of the drain
    return False
