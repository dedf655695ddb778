"""Typed errors that cross stage boundaries and are mapped to HTTP / gRPC codes at the ingress."""

from __future__ import annotations


class RequestError(ValueError):
    """The request is invalid. Maps to HTTP 400 / gRPC INVALID_ARGUMENT.

    `field` names the offending request field (dotted path, e.g. ``messages[0].content[1].image_url``),
    `message` says what was wrong and what is allowed.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # keep field/message when Ray pickles the exception across processes
        return (type(self), (self.field, self.message))


class ContextLengthError(RequestError):
    """Prompt tokens + visual tokens + max_tokens exceed the decoder's context window."""


class OverloadedError(RuntimeError):
    """A stage holds as many requests as it is configured to; retry later.

    Raised by a stage engine (e.g. ``decoders.batching.BatchingEngine.submit`` past
    ``max_batch_size + max_waiting``). Maps to HTTP 503 / gRPC RESOURCE_EXHAUSTED, like Serve's own
    ``BackPressureError``.
    """


class StageUnavailableError(OverloadedError):
    """A stage had no replica to take the request (one died or is being replaced) before any of the
    answer was sent. Maps like an overload (HTTP 503 / gRPC RESOURCE_EXHAUSTED): the request did no
    work the client saw, so a retry is safe (and Serve routes it to a live replica)."""


class DeadlineExceeded(TimeoutError):
    """A request ran past its time limit (a workflow's or one step's). Maps to HTTP 408 / gRPC
    DEADLINE_EXCEEDED; the message names the workflow or the step and the limit."""

    def __reduce__(self):
        return (type(self), self.args)


class WorkflowError(RuntimeError):
    """A workflow step failed for a reason other than a bad request. Maps to HTTP 500 / gRPC INTERNAL;
    `step` names the step, the message carries the original error."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step {step!r} failed: {message}")
        self.step = step
        self.message = message

    def __reduce__(self):
        return (type(self), (self.step, self.message))
