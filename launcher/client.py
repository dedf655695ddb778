"""A small gRPC client for triptych.v1 (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deployments.deadline import TIMEOUT_METADATA
from launcher.api_key import api_key_from_env, keyed_channel
from launcher.grpc_retry import RetryingStream
from launcher.retry import RetryPolicy
from triptych.v1 import triptych_pb2 as pb
from triptych.v1 import triptych_pb2_grpc as pb_grpc


class TriptychClient:
    """Blocking client over one channel. Use as a context manager or call close().

    `api_key` (default: `TRIPTYCH_API_KEY` from the environment) is sent with every call as metadata
    `authorization: Bearer <key>`; a server with API keys answers UNAUTHENTICATED without it.

    Streaming calls refused before their first message (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried
    with backoff under `retry` (3 retries by default; `launcher.retry.NO_RETRIES` turns it off);
    `retries` counts every retry this client made."""

    def __init__(self, target: str = "127.0.0.1:9000", timeout_s: float = 120.0, api_key: str | None = None,
                 retry: RetryPolicy | None = None):
        self._channel = grpc.insecure_channel(target)
        channel = keyed_channel(self._channel, api_key_from_env(api_key))
        self._stub = pb_grpc.TriptychStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._retry_lock = threading.Lock()
        self.retries = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def health(self) -> str:
        response = self._health.Check(health_pb2.HealthCheckRequest(), timeout=self._timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def chat(
        self,
        question: str,
        images: Sequence[bytes] = (),
        **options,
    ) -> Iterator[pb.ChatResponse]:
        """Stream the answer to one user turn: images first, then the question.

        `options` are ChatRequest fields: max_tokens, temperature, top_p, seed, pruning_method,
        visual_token_keep_ratio, model.
        """
        content = [pb.ContentPart(image=data) for data in images] + [pb.ContentPart(text=question)]
        request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=content)], **options)
        return self.chat_request(request)

    def chat_request(self, request: pb.ChatRequest) -> RetryingStream:
        return self._stream(self._stub.Chat, request)

    def generate_image(self, request: pb.GenerateImageRequest) -> RetryingStream:
        """Stream progress events, then one result with the PNG(s). `cancel()` the returned
        iterator to stop the server's denoising loop."""
        return self._stream(self._stub.GenerateImage, request)

    def _stream(self, method, request) -> RetryingStream:
        # The time limit goes along as metadata too: Serve's gRPC proxy does not pass a call's deadline on,
        # and the server stops the stages at it (deployments.deadline).
        metadata = ((TIMEOUT_METADATA, f"{self._timeout_s:g}"),)
        return RetryingStream(lambda: method(request, timeout=self._timeout_s, metadata=metadata), self._retry,
                              self._count_retry)

    def _count_retry(self, retry: int, exc: BaseException) -> None:
        with self._retry_lock:
            self.retries += 1

    def run_workflow(self, name: str, inputs: dict[str, pb.WorkflowValue]) -> RetryingStream:
        """Stream a workflow's step events, then one result with its typed outputs."""
        return self._stream(self._stub.RunWorkflow, pb.WorkflowRequest(workflow=name, inputs=inputs))

    def embed(self, inputs: Sequence[str | bytes], model: str = "", dimensions: int | None = None) -> pb.EmbedResponse:
        """One L2-normalised vector per input, in order, in one joint space: a `str` is a text, `bytes` an
        image file (PNG / JPEG / WEBP / GIF)."""
        parts = [pb.ContentPart(text=x) if isinstance(x, str) else pb.ContentPart(image=bytes(x)) for x in inputs]
        request = pb.EmbedRequest(model=model, inputs=parts, dimensions=dimensions)
        return self._stub.Embed(request, timeout=self._timeout_s)
