"""How the load benchmark sends one request and times it: HTTP (the official ``openai`` client,
streaming) or gRPC (``launcher.client.TriptychClient``), one sender per (transport, kind).

Every sender is a blocking call returning a ``Record``; the drivers run many at once in threads.
Times are ``time.perf_counter()`` seconds measured from the request's *scheduled* start (open loop:
its Poisson arrival time), so a client that falls behind shows up as latency, not as a lower rate.
TTFT = scheduled start -> first non-empty text chunk; the chunk gaps after it are the inter-token
latencies (one entry per streamed chunk, as vLLM's benchmark counts them); E2E = scheduled start ->
end of the response. A failed request has ``status`` set to its HTTP status code (``"503"``), its
gRPC code (``"RESOURCE_EXHAUSTED"``), ``"connection"`` / ``"timeout"``, or ``"stream_error"`` (an
in-band SSE error after the stream started).

Retries (``launcher.retry``): a request refused before any byte (HTTP 503 or no connection, gRPC
UNAVAILABLE / RESOURCE_EXHAUSTED) is sent again with exponential backoff, up to the policy's count
(3 by default); ``Record.retries`` counts them, and its times include the waits. Nothing is retried
once a response has started, nor after a timeout.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load_workload import RequestSpec
from launcher.retry import RetryPolicy, call_with_retries

TRANSPORTS = ("http", "grpc")
OK = "ok"


@dataclass
class Record:
    """One request as the load generator saw it (all times in seconds)."""

    index: int
    kind: str
    transport: str
    scheduled_s: float  # perf_counter of the intended start
    status: str = OK
    ttft_s: float | None = None  # chat only
    e2e_s: float = float("nan")
    output_tokens: int = 0
    chunk_gaps_s: list[float] = field(default_factory=list)
    cache_hit: bool | None = None  # chat: usage.cache_hit
    repeated: bool = False  # chat: the image came from the repeated pool
    error: str = ""
    retries: int = 0  # attempts after the first (refused before any byte: 503 / UNAVAILABLE / RESOURCE_EXHAUSTED)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (E2E - TTFT) / (tokens - 1)."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


class _Stream:
    """Stamps chunk arrivals of one response against its scheduled start."""

    def __init__(self, record: Record):
        self.record = record
        self._last: float | None = None

    def text(self, text: str) -> None:
        if not text:
            return
        now = time.perf_counter()
        if self._last is None:
            self.record.ttft_s = now - self.record.scheduled_s
        else:
            self.record.chunk_gaps_s.append(now - self._last)
        self._last = now

    def end(self) -> Record:
        self.record.e2e_s = time.perf_counter() - self.record.scheduled_s
        return self.record


class HttpSender:
    """OpenAI-compatible HTTP: streaming chat completions and image generations."""

    def __init__(self, base_url: str, timeout_s: float, api_key: str | None = None,
                 retry: RetryPolicy | None = None):
        import openai

        self._openai = openai
        self._retry = retry or RetryPolicy()
        self._client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key or "unused", max_retries=0,
                                     timeout=timeout_s)  # the key goes out as Authorization: Bearer <key>
        self._chat_model, self._image_model = [m.id for m in self._client.models.list().data][:2]  # (then embeddings)

    def close(self) -> None:
        self._client.close()

    def send(self, spec: RequestSpec, scheduled_s: float) -> Record:
        record = Record(spec.index, spec.kind, "http", scheduled_s, repeated=spec.repeated)
        try:
            return {"chat": self._chat, "image": self._image}[spec.kind](spec, record)
        except self._openai.APIStatusError as exc:  # the body says who refused (Serve's proxy answers in text)
            return _failed(record, str(exc.status_code), exc, exc.response.text)
        except self._openai.APITimeoutError as exc:
            return _failed(record, "timeout", exc)
        except self._openai.APIConnectionError as exc:
            return _failed(record, "connection", exc)
        except self._openai.APIError as exc:  # an in-band error chunk after the stream started
            return _failed(record, "stream_error", exc)

    def _retryable(self, exc: BaseException) -> bool:
        """503 (overloaded or draining), or no connection at all; never a timeout (work may have run)."""
        if isinstance(exc, self._openai.APITimeoutError):
            return False
        return isinstance(exc, self._openai.APIConnectionError) or (
            isinstance(exc, self._openai.APIStatusError) and exc.status_code == 503)

    def _until_accepted(self, record: Record, call: Callable[[], Any]) -> Any:
        """``call()`` (which returns once the response headers are in), retried while it is refused."""
        return call_with_retries(call, self._retryable, self._retry, lambda n, _: setattr(record, "retries", n))

    def _chat(self, spec: RequestSpec, record: Record) -> Record:
        image_url = "data:image/jpeg;base64," + base64.b64encode(spec.image).decode()
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                  {"type": "text", "text": spec.prompt}]}]
        stream, usage = _Stream(record), None
        for chunk in self._until_accepted(record, lambda: self._client.chat.completions.create(
            model=self._chat_model, messages=messages, max_tokens=spec.max_tokens, temperature=0.0,
            stream=True, stream_options={"include_usage": True},
        )):
            if chunk.choices:
                stream.text(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        record.output_tokens = usage.completion_tokens
        record.cache_hit = (usage.model_extra or {}).get("cache_hit")
        return stream.end()

    def _image(self, spec: RequestSpec, record: Record) -> Record:
        self._until_accepted(record, lambda: self._client.images.generate(
            model=self._image_model, prompt=spec.prompt, size=f"{spec.size}x{spec.size}",
            response_format="b64_json", extra_body={"steps": spec.steps, "seed": spec.seed},
        ))
        return _Stream(record).end()


class GrpcSender:
    """triptych.v1 over gRPC: the streaming ``Chat`` and ``GenerateImage`` calls."""

    def __init__(self, target: str, timeout_s: float, api_key: str | None = None,
                 retry: RetryPolicy | None = None):
        from launcher.client import TriptychClient

        self._client = TriptychClient(target, timeout_s=timeout_s, api_key=api_key, retry=retry)

    def close(self) -> None:
        self._client.close()

    def send(self, spec: RequestSpec, scheduled_s: float) -> Record:
        import grpc

        record = Record(spec.index, spec.kind, "grpc", scheduled_s, repeated=spec.repeated)
        call = (self._client.chat(spec.prompt, [spec.image], max_tokens=spec.max_tokens, temperature=0.0)
                if spec.kind == "chat" else self._client.generate_image(self._image_request(spec)))
        try:
            return self._chat(call, record) if spec.kind == "chat" else self._image(call, record)
        except grpc.RpcError as exc:
            return _failed(record, exc.code().name, exc)
        finally:
            record.retries = call.retries

    @staticmethod
    def _chat(call, record: Record) -> Record:
        stream, usage = _Stream(record), None
        for message in call:
            stream.text(message.delta)
            if message.HasField("usage"):
                usage = message.usage
        record.output_tokens, record.cache_hit = usage.completion_tokens, usage.cache_hit
        return stream.end()

    @staticmethod
    def _image_request(spec: RequestSpec):
        from triptych.v1 import triptych_pb2 as pb

        return pb.GenerateImageRequest(prompt=spec.prompt, width=spec.size, height=spec.size, steps=spec.steps,
                                       seed=spec.seed)

    @staticmethod
    def _image(call, record: Record) -> Record:
        for _ in call:
            pass
        return _Stream(record).end()


SENDERS: dict[str, Callable[..., HttpSender | GrpcSender]] = {  # (url or target, timeout_s, api_key, retry)
    "http": HttpSender, "grpc": GrpcSender}


def _failed(record: Record, status: str, exc: Exception, detail: str = "") -> Record:
    message = detail or str(exc)
    record.status, record.error = status, message.strip().splitlines()[0][:200] if message.strip() else type(exc).__name__
    record.e2e_s = time.perf_counter() - record.scheduled_s
    return record
