"""`TriptychIngress`: the edge. HTTP (OpenAI-compatible, FastAPI) and gRPC (triptych.v1) in one
deployment: parse + validate, run the workflow, map errors to 400 / INVALID_ARGUMENT naming the field.

Every request runs through one executor (`pipelines.workflow.run_workflow`): the chat, images and
embeddings APIs run the one-step built-ins `chat`, `text_to_image` and `embed`; `/v1/workflows/{name}`
and `RunWorkflow` run any loaded workflow.

No `from __future__ import annotations` here: FastAPI must see real annotations (e.g. `Request`).
"""


import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, contextmanager

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
from deployments.grpc_workflows import workflow_event_to_proto, workflow_inputs_from_proto
from deployments.http_edge import install_http_edge
from deployments.http_schema import install_openapi
from deployments.http_workflows import event_body, parse_workflow_body, result_body, sse
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
from pipelines.workflow import OpContext, StepProgress, Workflow, WorkflowResult, check_inputs, run_workflow
from triptych.config import TriptychConfig
from triptych.errors import DeadlineExceeded, OverloadedError, RequestError, WorkflowError
from triptych.types import ChatUsage, EmbeddingResult, EmbedItem, ImageProgress, ImageResult, TextDelta

logger = logging.getLogger("triptych.ingress")
# A full Serve queue (BackPressureError) or a full decoder engine (OverloadedError): 503 / RESOURCE_EXHAUSTED
OVERLOADED = (BackPressureError, OverloadedError)
http_app = FastAPI(title="Triptych", docs_url=None, redoc_url=None)
add_web_page(http_app)  # GET / and /static/: the browser page
http_app.add_middleware(AdmissionMiddleware)  # inside the edge: keys and size first, then room for the request
install_http_edge(http_app)  # API keys and body size first; every error in OpenAI's shape
install_openapi(http_app)  # /openapi.json describes the bodies (deployments/http_schema.py)
# The errors a request can end with, as (HTTP status, gRPC code): a bad request names the field, an
# overload says retry later, a deadline names what ran past it, a failed workflow step names the step.
HANDLED = (RequestError, *OVERLOADED, DeadlineExceeded, WorkflowError)


def _status(exc: Exception) -> tuple[int, grpc.StatusCode, dict]:
    """(HTTP status, gRPC code, OpenAI-shaped error body) of one of the HANDLED errors."""
    if isinstance(exc, RequestError):
        return 400, grpc.StatusCode.INVALID_ARGUMENT, error_body(exc.message, exc.field)
    if isinstance(exc, DeadlineExceeded):
        return 408, grpc.StatusCode.DEADLINE_EXCEEDED, error_body(str(exc), None, "timeout", "deadline_exceeded")
    if isinstance(exc, WorkflowError):
        return 500, grpc.StatusCode.INTERNAL, error_body(str(exc), exc.step, "server_error", "step_failed")
    overloaded = f"overloaded, retry later: {exc}"
    return 503, grpc.StatusCode.RESOURCE_EXHAUSTED, error_body(overloaded, None, "server_overloaded")


@contextmanager
def _grpc_status_on_error(grpc_context):
    """No valid API key -> UNAUTHENTICATED (checked first); then the HANDLED errors' codes, the
    message as details (`field: what`). Serve keeps a status code set on the context when the method
    then raises."""
    require_api_key(grpc_context)
    try:
        yield
    except HANDLED as exc:
        _, code, body = _status(exc)
        grpc_context.set_code(code)
        # `field: message`, never str(exc): a stage's RequestError arrives wrapped by Ray, traceback included
        grpc_context.set_details(f"{exc.field}: {exc.message}" if isinstance(exc, RequestError)
                                 else body["error"]["message"])
        raise


def _http_error(exc: Exception) -> JSONResponse:
    status, _, body = _status(exc)
    return JSONResponse(body, status_code=status)


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
        workflows: dict[str, Workflow],
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
        vision, text = ServeVisionStage(vision_encoder), ServeTextEncoderStage(text_encoder)
        self._embeddings = EmbeddingPipeline(ServeEmbedderStage(embedder), self._cache, config.limits)
        self._workflows = workflows
        self._ops = OpContext(
            chat=ChatPipeline(vision, ServeDecoderStage(llm_decoder), self._cache,
                              ChatPromptBuilder(tokenizer.tokenizer, tokenizer.image_token, tokenizer.image_token_id)),
            text_to_image=TextToImagePipeline(text, ServeDenoiserStage(denoiser), self._cache),
            embeddings=self._embeddings, vision=vision, text_encoder=text, cache=self._cache,
            chat_defaults=config.chat, image_defaults=config.images, limits=config.limits,
        )  # fmt: skip

    # ---- shared -------------------------------------------------------------------------------

    async def _start_chat(self, request: ChatRequest) -> tuple[TextDelta | ChatUsage, AsyncIterator]:
        """Validate and run until the first event, so request errors surface before any byte is sent."""
        started = time.perf_counter()
        await asyncio.to_thread(validate_chat_request, request, self._config.limits)
        events = self._metrics.chat(self._builtin("chat", {"request": request}), started)
        return await anext(events), events

    async def _start_images(self, request: ImageRequest) -> tuple[ImageProgress | ImageResult, AsyncIterator]:
        started = time.perf_counter()
        validate_image_request(request, self._config.images.max_size, self._config.limits.max_prompt_chars)
        events = self._metrics.images(self._builtin("text_to_image", {"request": request}), started)
        return await anext(events), events

    async def _builtin(self, name: str, inputs: dict) -> AsyncIterator:
        """Run the built-in workflow behind one of the chat / images / embeddings APIs; yield its one
        step's own events (TextDelta, ChatUsage, ImageProgress, ImageResult, EmbeddingResult). Closing
        this generator (the client went away) cancels the running step."""
        run = run_workflow(self._workflows[name], inputs, self._ops, step_names_in_errors=False)
        async with aclosing(run) as events:
            async for event in events:
                if isinstance(event, StepProgress):
                    yield event.event

    def _callable_workflows(self) -> dict[str, Workflow]:
        """The workflows a client can run by name: every input a client type (chat / text_to_image
        take parsed requests and are run by their own APIs)."""
        return {name: w for name, w in self._workflows.items() if not any(i.type.internal for i in w.inputs)}

    async def _start_workflow(self, workflow: Workflow, inputs: dict) -> tuple[object, AsyncIterator]:
        """Check the inputs (images decoded: a worker thread) and run to the first event, so request
        errors come before any byte is sent."""
        checked = await asyncio.to_thread(check_inputs, workflow, inputs, self._config.limits)
        events = run_workflow(workflow, checked, self._ops, timeout_s=self._config.workflow_timeout_s)
        return await anext(events), events

    async def _embed(self, items: tuple[EmbedItem, ...], dimensions: int | None, field: str) -> EmbeddingResult:
        """The items' vectors through the embedding cache; `dimensions` (if any) must be the model's."""
        started = time.perf_counter()
        check_dimensions(dimensions, await self._embeddings.info())
        values = [item.text if item.image is None else item.image for item in items]
        try:
            results = [event async for event in self._builtin("embed", {"items": values})]
        except RequestError as exc:  # the built-in names its input `items`; the APIs call it `field`
            raise RequestError(exc.field.replace("items", field, 1), exc.message) from None
        result = next(event for event in results if isinstance(event, EmbeddingResult))
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
        except HANDLED as exc:
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
        except HANDLED as exc:
            return _http_error(exc)
        payload = await asyncio.to_thread(  # up to 256 vectors of JSON numbers: not on the event loop
            lambda: json.dumps(embeddings_body(result, request.encoding_format, self._embedding_model_name)))
        return Response(payload, media_type="application/json")

    @http_app.get("/v1/workflows")
    def workflows(self) -> dict:
        return {"object": "list", "data": [w.describe() for w in self._callable_workflows().values()]}

    @http_app.post("/v1/workflows/{name}")
    async def run_workflow(self, name: str, raw: Request):
        workflow = self._callable_workflows().get(name)
        if workflow is None:
            known = ", ".join(self._callable_workflows())
            return JSONResponse(error_body(f"no workflow {name!r}; workflows: {known}", "name", code="not_found"),
                                status_code=404)  # fmt: skip
        try:
            body = await asyncio.to_thread(_json_body, await raw.body())
            inputs, stream = await asyncio.to_thread(parse_workflow_body, body, workflow, self._config.limits)
            first, events = await self._start_workflow(workflow, inputs)
        except HANDLED as exc:
            return _http_error(exc)
        if stream:
            return StreamingResponse(self._workflow_sse(first, events), media_type="text/event-stream")
        result = None
        async with aclosing(events):
            try:
                async for event in _prepend(first, events):
                    result = event if isinstance(event, WorkflowResult) else result
            except HANDLED as exc:  # a step failed after the first event: nothing is sent yet
                return _http_error(exc)
        payload = await asyncio.to_thread(lambda: json.dumps(result_body(result)))  # base64 PNGs, vectors
        return Response(payload, media_type="application/json")

    async def _workflow_sse(self, first, events) -> AsyncIterator[str]:
        async with aclosing(events):
            try:
                async for event in _prepend(first, events):
                    payload = event_body(event)
                    if payload is not None:
                        yield sse(payload)
            except HANDLED as exc:  # headers are sent: the error in-band, in the usual shape
                yield sse(json.loads(_http_error(exc).body))
            except Exception as exc:
                logger.exception("workflow stream failed")
                yield sse(error_body(str(exc), None, "server_error"))
        yield "data: [DONE]\n\n"

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
        except HANDLED as exc:
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

    async def RunWorkflow(self, message, grpc_context):
        with _grpc_status_on_error(grpc_context):  # the API key first
            workflow = self._callable_workflows().get(message.workflow)
            if workflow is None:
                known = ", ".join(self._callable_workflows())
                grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
                grpc_context.set_details(f"no workflow {message.workflow!r}; workflows: {known}")
                raise LookupError(message.workflow)  # Serve keeps the code set above when the method raises
            inputs = workflow_inputs_from_proto(message, workflow)
            first, events = await self._start_workflow(workflow, inputs)
        async with aclosing(events):
            with _grpc_status_on_error(grpc_context):  # a step failing after the first event
                async for event in _prepend(first, events):
                    response = workflow_event_to_proto(event)
                    if response is not None:
                        yield response

    def Check(self, message) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
