"""`TriptychIngress`: the edge. HTTP (OpenAI-compatible, FastAPI) and gRPC (triptych.v1) in one
deployment: parse + validate, run the workflow, map errors to 400 / INVALID_ARGUMENT naming the field.

No `from __future__ import annotations` here: FastAPI must see real annotations (e.g. `Request`).
"""


import asyncio
import json
import logging
from collections.abc import AsyncIterator

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve.handle import DeploymentHandle

from cache import EmbeddingCache
from decoders.chat_template import ChatPromptBuilder
from deployments.grpc_chat import chat_request_from_proto, delta_to_proto, usage_to_proto
from deployments.openai_chat import CompletionIds, error_body, parse_chat_body
from deployments.stage_clients import ServeDecoderStage, ServeVisionStage
from models import load_chat_tokenizer
from pipelines.chat import ChatPipeline
from pipelines.chat_request import ChatRequest, validate_chat_request
from triptych.config import TriptychConfig
from triptych.errors import RequestError
from triptych.types import ChatUsage, TextDelta

logger = logging.getLogger("triptych.ingress")
http_app = FastAPI(title="Triptych", docs_url=None, redoc_url=None)


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    """Defined above the class: Serve's ingress wrapper pickles the class with the globals it sees."""
    yield first
    async for item in rest:
        yield item


@serve.deployment
@serve.ingress(http_app)
class TriptychIngress:
    def __init__(
        self,
        vision_encoder: DeploymentHandle,
        llm_decoder: DeploymentHandle,
        config: TriptychConfig,
        chat_model_path: str,
        redis_url: str | None,
    ):
        self._config = config
        self._model_name = chat_model_path.rstrip("/").rsplit("/", 1)[-1]
        self._cache = EmbeddingCache(
            redis_url if config.cache.enabled else None,
            ttl_s=config.cache.ttl_s,
            socket_timeout_s=config.cache.socket_timeout_s,
        )
        tokenizer = load_chat_tokenizer(chat_model_path)
        self._chat = ChatPipeline(
            ServeVisionStage(vision_encoder),
            ServeDecoderStage(llm_decoder),
            self._cache,
            ChatPromptBuilder(tokenizer.tokenizer, tokenizer.image_token, tokenizer.image_token_id),
        )

    # ---- shared -------------------------------------------------------------------------------

    async def _start_chat(self, request: ChatRequest) -> tuple[TextDelta | ChatUsage, AsyncIterator]:
        """Validate and run until the first event, so request errors surface before any byte is sent."""
        await asyncio.to_thread(validate_chat_request, request, self._config.limits)
        events = self._chat.run(request)
        return await anext(events), events

    def _check_model(self, model: object) -> None:
        if model not in (None, "", self._model_name):
            raise RequestError("model", f"unknown model {model!r}; this server serves {self._model_name!r}")

    def cache_stats(self) -> dict:
        return self._cache.stats().as_dict()

    # ---- HTTP ---------------------------------------------------------------------------------

    @http_app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @http_app.get("/v1/models")
    def models(self) -> dict:
        return {"object": "list", "data": [
            {"id": self._model_name, "object": "model", "created": 0, "owned_by": "triptych"}]}

    @http_app.post("/v1/chat/completions")
    async def chat_completions(self, raw: Request):
        try:
            try:
                body = json.loads(await raw.body())
            except ValueError as exc:
                raise RequestError("body", f"is not valid JSON ({exc})") from None
            request, stream, include_usage = parse_chat_body(body, self._config.chat)
            self._check_model(body.get("model"))
            first, events = await self._start_chat(request)
        except RequestError as exc:
            return JSONResponse(error_body(exc.message, exc.field), status_code=400)
        ids = CompletionIds(self._model_name)
        if stream:
            return StreamingResponse(
                self._sse(ids, first, events, include_usage), media_type="text/event-stream"
            )
        text, finish_reason, usage = [], "stop", None
        async for event in _prepend(first, events):
            if isinstance(event, ChatUsage):
                usage = event
            else:
                text.append(event.text)
                finish_reason = event.finish_reason or finish_reason
        return ids.completion("".join(text), finish_reason, usage)

    async def _sse(self, ids: CompletionIds, first, events, include_usage: bool) -> AsyncIterator[str]:
        yield ids.chunk({"role": "assistant", "content": ""})
        try:
            async for event in _prepend(first, events):
                if isinstance(event, ChatUsage):
                    if include_usage:
                        yield ids.usage_chunk(event)
                elif event.finish_reason:
                    if event.text:
                        yield ids.chunk({"content": event.text})
                    yield ids.chunk({}, event.finish_reason)
                elif event.text:
                    yield ids.chunk({"content": event.text})
        except Exception as exc:  # headers are sent: report in-band, then end the stream
            logger.exception("chat stream failed")
            yield f"data: {json.dumps(error_body(str(exc), None, 'server_error'))}\n\n"
        yield "data: [DONE]\n\n"

    # ---- gRPC (method names match triptych.v1.Triptych and grpc.health.v1.Health) -------------

    async def Chat(self, message, grpc_context):
        try:
            request = chat_request_from_proto(message, self._config.chat)
            self._check_model(message.model)
            first, events = await self._start_chat(request)
        except RequestError as exc:
            # Serve keeps a code set on the context when the method then raises.
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(exc))
            raise
        finish_reason = "stop"
        async for event in _prepend(first, events):
            if isinstance(event, ChatUsage):
                yield usage_to_proto(event, finish_reason)
            else:
                finish_reason = event.finish_reason or finish_reason
                if event.text:
                    yield delta_to_proto(event)

    def Check(self, message) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
