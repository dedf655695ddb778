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
