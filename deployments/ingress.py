"""`TriptychIngress`: the edge. HTTP (OpenAI-compatible, FastAPI) and gRPC (triptych.v1) in one
deployment: parse + validate, run the workflow, map errors to 400 / INVALID_ARGUMENT naming the field.

No `from __future__ import annotations` here: FastAPI must see real annotations (e.g. `Request`).
"""


import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import contextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from decoders.chat_template import ChatPromptBuilder
from deployments.admission import AdmissionMiddleware, admitted, configure_admission
from deployments.cache_server import replica_cache
from deployments.edge_policy import install_edge_policy
from deployments.grpc_chat import chat_request_from_proto, delta_to_proto, usage_to_proto
from deployments.grpc_edge import require_api_key
from deployments.grpc_embeddings import embed_items_from_proto, embed_response_to_proto
from deployments.grpc_images import image_event_to_proto, image_request_from_proto
from deployments.http_edge import install_http_edge
from deployments.metrics import RequestMetrics
from deployments.openai_chat import CompletionIds, error_body, parse_chat_body
from deployments.openai_embeddings import check_dimensions, embeddings_body, parse_embeddings_body
from deployments.openai_images import image_stream_requested, images_body, images_sse, parse_image_body
from deployments.stage_clients import (
    ServeDecoderStage,
    ServeDenoiserStage,
    ServeEmbedderStage,
    ServeTextEncoderStage,
    ServeVisionStage,
)
from deployments.web_page import add_web_page
from models import load_chat_tokenizer
from pipelines.chat import ChatPipeline
from pipelines.chat_request import ChatRequest, validate_chat_request
from pipelines.embeddings import EmbeddingPipeline
from pipelines.image_request import ImageRequest, validate_image_request
from pipelines.text_to_image import TextToImagePipeline
from triptych.config import TriptychConfig
from triptych.errors import OverloadedError, RequestError
from triptych.types import ChatUsage, EmbeddingResult, EmbedItem, ImageProgress, ImageResult, TextDelta

logger = logging.getLogger("triptych.ingress")
# A full Serve queue (BackPressureError) or a full decoder engine (OverloadedError): 503 / RESOURCE_EXHAUSTED
OVERLOADED = (BackPressureError, OverloadedError)
http_app = FastAPI(title="Triptych", docs_url=None, redoc_url=None)
add_web_page(http_app)  # GET / and /static/: the browser page
http_app.add_middleware(AdmissionMiddleware)  # inside the edge: keys and size first, then room for the request
install_http_edge(http_app)  # API keys and body size first; every error in OpenAI's shape


@contextmanager
def _grpc_status_on_error(grpc_context):
    """No valid API key -> UNAUTHENTICATED (checked first); bad request -> INVALID_ARGUMENT naming the
    field; a full stage queue -> RESOURCE_EXHAUSTED. Serve keeps a status code set on the context when the
    method then raises."""
    require_api_key(grpc_context)
    try:
        yield
    except RequestError as exc:
        grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        grpc_context.set_details(f"{exc.field}: {exc.message}")  # str(): Ray's traceback too
        raise
    except OVERLOADED as exc:
        grpc_context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        grpc_context.set_details(f"overloaded, retry later: {exc}")
        raise


def _http_error(exc: Exception) -> JSONResponse:
    """Bad request -> 400 naming the field; a full stage queue -> 503."""
    if isinstance(exc, RequestError):
        return JSONResponse(error_body(exc.message, exc.field), status_code=400)
    return JSONResponse(error_body(f"overloaded, retry later: {exc}", None, "server_overloaded"), status_code=503)


def _json_body(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RequestError("body", f"is not valid JSON ({exc})") from None


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
        text_encoder: DeploymentHandle,
        denoiser: DeploymentHandle,
        config: TriptychConfig,
        chat_model_path: str,
        image_model_path: str,
        cache_server: DeploymentHandle | None,
        embedder: DeploymentHandle,
        embedding_model_path: str,
    ):
        self._config = config
        install_edge_policy(config)  # keys + body limit for the HTTP middleware and gRPC
        self._admission = configure_admission(config)  # chats / images in flight, refused past the stages' room
        self._model_name = chat_model_path.rstrip("/").rsplit("/", 1)[-1]
        self._image_model_name = image_model_path.rstrip("/").rsplit("/", 1)[-1]
        self._embedding_model_name = embedding_model_path.rstrip("/").rsplit("/", 1)[-1]
        self._cache = replica_cache(config.cache, cache_server)
        self._metrics = RequestMetrics()
        tokenizer = load_chat_tokenizer(chat_model_path)
        self._chat = ChatPipeline(
            ServeVisionStage(vision_encoder),
            ServeDecoderStage(llm_decoder),
            self._cache,
            ChatPromptBuilder(tokenizer.tokenizer, tokenizer.image_token, tokenizer.image_token_id),
        )
        self._images = TextToImagePipeline(
            ServeTextEncoderStage(text_encoder), ServeDenoiserStage(denoiser), self._cache
        )
        self._embeddings = EmbeddingPipeline(ServeEmbedderStage(embedder), self._cache, config.limits)

    # ---- shared -------------------------------------------------------------------------------

    async def _start_chat(self, request: ChatRequest) -> tuple[TextDelta | ChatUsage, AsyncIterator]:
        """Validate and run until the first event, so request errors surface before any byte is sent."""
        started = time.perf_counter()
        await asyncio.to_thread(validate_chat_request, request, self._config.limits)
        events = self._metrics.chat(self._chat.run(request), started)
        return await anext(events), events

    async def _start_images(self, request: ImageRequest) -> tuple[ImageProgress | ImageResult, AsyncIterator]:
        started = time.perf_counter()
        validate_image_request(request, self._config.images.max_size, self._config.limits.max_prompt_chars)
        events = self._metrics.images(self._images.run(request), started)
        return await anext(events), events

    async def _embed(self, items: tuple[EmbedItem, ...], dimensions: int | None, field: str) -> EmbeddingResult:
        """The items' vectors through the embedding cache; `dimensions` (if any) must be the model's."""
        started = time.perf_counter()
        check_dimensions(dimensions, await self._embeddings.info())
        result = await self._embeddings.embed(items, field)
        self._metrics.e2e.observe(time.perf_counter() - started, tags={"kind": "embedding"})
        return result

    @staticmethod
    def _check_model(model: object, served: str) -> None:
        if model not in (None, "", served):
            raise RequestError("model", f"unknown model {model!r}; this endpoint serves {served!r}")

    def cache_stats(self) -> dict:
        return self._cache.stats().as_dict()

    def admission_stats(self) -> dict:
        return self._admission.stats()

    # ---- HTTP ---------------------------------------------------------------------------------

    @http_app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @http_app.get("/v1/models")
    def models(self) -> dict:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "triptych"}
            for name in (self._model_name, self._image_model_name, self._embedding_model_name)]}

    @http_app.post("/v1/images/generations")
    async def images_generations(self, raw: Request):
        try:
            body = _json_body(await raw.body())
            request = parse_image_body(body, self._config.images)
            stream = image_stream_requested(body)
            self._check_model(body.get("model"), self._image_model_name)
            first, events = await self._start_images(request)
        except (RequestError, *OVERLOADED) as exc:
            return _http_error(exc)
        if stream:
            return StreamingResponse(images_sse(first, events), media_type="text/event-stream")
        async for event in _prepend(first, events):
            if isinstance(event, ImageResult):
                return images_body(event)
        raise RuntimeError("the text-to-image workflow ended without a result")

    @http_app.post("/v1/embeddings")
    async def embeddings(self, raw: Request):
        try:
            body = await asyncio.to_thread(_json_body, await raw.body())
            request = await asyncio.to_thread(parse_embeddings_body, body, self._config.limits)
            self._check_model(body.get("model"), self._embedding_model_name)
            result = await self._embed(request.items, request.dimensions, "input")
        except (RequestError, *OVERLOADED) as exc:
            return _http_error(exc)
        payload = await asyncio.to_thread(  # up to 256 vectors of JSON numbers: not on the event loop
            lambda: json.dumps(embeddings_body(result, request.encoding_format, self._embedding_model_name)))
        return Response(payload, media_type="application/json")

    @http_app.post("/v1/chat/completions")
    async def chat_completions(self, raw: Request):
        try:
            # JSON and base64 of a body with images are CPU work: a worker thread, not the event loop
            body = await asyncio.to_thread(_json_body, await raw.body())
            request, stream, include_usage = await asyncio.to_thread(
                parse_chat_body, body, self._config.chat, self._config.limits
            )
            self._check_model(body.get("model"), self._model_name)
            first, events = await self._start_chat(request)
        except (RequestError, *OVERLOADED) as exc:
            return _http_error(exc)
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

    @admitted("chat")
    async def Chat(self, message, grpc_context):
        with _grpc_status_on_error(grpc_context):
            request = chat_request_from_proto(message, self._config.chat)
            self._check_model(message.model, self._model_name)
            first, events = await self._start_chat(request)
        finish_reason = "stop"
        async for event in _prepend(first, events):
            if isinstance(event, ChatUsage):
                yield usage_to_proto(event, finish_reason)
            else:
                finish_reason = event.finish_reason or finish_reason
                if event.text:
                    yield delta_to_proto(event)

    @admitted("image")
    async def GenerateImage(self, message, grpc_context):
        with _grpc_status_on_error(grpc_context):
            request = image_request_from_proto(message, self._config.images)
            first, events = await self._start_images(request)
        async for event in _prepend(first, events):
            yield image_event_to_proto(event)

    async def Embed(self, message, grpc_context):
        with _grpc_status_on_error(grpc_context):
            items = embed_items_from_proto(message, self._config.limits.max_embedding_inputs)
            self._check_model(message.model, self._embedding_model_name)
            dimensions = message.dimensions if message.HasField("dimensions") else None
            result = await self._embed(items, dimensions, "inputs")
        return await asyncio.to_thread(embed_response_to_proto, result, self._embedding_model_name)

    def Check(self, message) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
