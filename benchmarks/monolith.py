"""`Monolith`: the baseline `benchmarks.disaggregation` measures Triptych's separate stage deployments
against. One Serve deployment type whose every replica holds every model and runs each request start to
finish in itself, behind the same OpenAI HTTP API.

A replica loads the vision encoder, the LLM decoder (in the same continuous-batching engine an
`LLMDecoder` replica runs, with the same `decoder_batching` config), the text encoder and the denoiser,
and runs the served workflows (`pipelines.chat.ChatPipeline`, `pipelines.text_to_image.TextToImagePipeline`)
over in-process stages (`pipelines.local_stages`), with the same embedding cache (the application's
embedded Redis, `CacheServer`, or `cache.redis_url`). So a monolith replica differs from Triptych in
where the work runs, not in what runs: every stage of a request shares the replica's process and CPU
share with every other request in it, and the whole replica is what scales.

HTTP, parsed and shaped by the deployments' own functions: `GET /healthz`, `GET /v1/models`,
`POST /v1/chat/completions` (streaming SSE with `stream_options.include_usage`, or one JSON body) and
`POST /v1/images/generations` (`b64_json`); a bad request is a 400 naming the field, a full decoder
engine a 503. `app_builder` is the Serve builder (`import_path: benchmarks.monolith:app_builder`, `args`
a `TriptychConfig` whose `ingress` block sizes the monolith's replicas).

No `from __future__ import annotations` here: FastAPI must see real annotations (`Request`).
"""

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from decoders.batching import BatchingConfig, BatchingEngine
from denoisers.engine import DenoiserEngine
from denoisers.text_encoder import TextEncoderEngine
from deployments.cache_server import CacheServer, replica_cache
from deployments.openai_chat import CompletionIds, error_body, parse_chat_body
from deployments.openai_images import images_body, parse_image_body
from encoders.engine import VisionEncoderEngine
from models import load_language_model, load_vision_tower
from models.profiles import resolve_chat_model, resolve_image_model
from pipelines.chat import ChatPipeline
from pipelines.chat_decoder import ChatDecoder
from pipelines.chat_request import validate_chat_request
from pipelines.image_request import validate_image_request
from pipelines.local_stages import LocalDenoiserStage, LocalTextEncoderStage, LocalVisionStage
from pipelines.text_to_image import TextToImagePipeline
from triptych.config import TriptychConfig, load_config
from triptych.errors import OverloadedError, RequestError
from triptych.types import ChatUsage, ImageResult

APP_NAME = "monolith"
monolith_http = FastAPI(title="Triptych monolith (benchmark baseline)", docs_url=None, redoc_url=None)


def _error(exc: RequestError | OverloadedError) -> JSONResponse:
    if isinstance(exc, RequestError):
        return JSONResponse(error_body(exc.message, exc.field), status_code=400)
    return JSONResponse(error_body(f"overloaded, retry later: {exc}", None, "server_overloaded"), status_code=503)


async def _body(raw: Request) -> Any:
    try:
        return json.loads(await raw.body())
    except ValueError as exc:
        raise RequestError("body", f"is not valid JSON ({exc})") from None


async def _chat_chunks(ids: CompletionIds, first, events: AsyncIterator, include_usage: bool,
                       stream: bool) -> AsyncIterator:
    """Streaming: the SSE lines of an OpenAI chat stream, ending ``data: [DONE]``. Not streaming: one item,
    the completion body. Defined above the class: Serve's ingress wrapper pickles the class with the
    globals it sees."""
    if stream:
        yield ids.chunk({"role": "assistant", "content": ""})
    text: list[str] = []
    event, finish_reason = first, "stop"
    while event is not None:
        if isinstance(event, ChatUsage):
            if not stream:
                yield ids.completion("".join(text), finish_reason, event)
            elif include_usage:
                yield ids.usage_chunk(event)
        else:
            text.append(event.text)
            finish_reason = event.finish_reason or finish_reason
            if stream and (event.text or event.finish_reason):
                yield ids.chunk({"content": event.text} if event.text else {}, event.finish_reason)
        event = await anext(events, None)
    if stream:
        yield "data: [DONE]\n\n"


@serve.deployment
@serve.ingress(monolith_http)
class Monolith:
    def __init__(self, config: TriptychConfig, chat_model_path: str, image_model_path: str,
                 cache_server: DeploymentHandle | None):
        self._config = config
        self._chat_model, self._image_model = Path(chat_model_path).name, Path(image_model_path).name
        cache = replica_cache(config.cache, cache_server)
        self._decoder = BatchingEngine(load_language_model(chat_model_path),
                                       BatchingConfig(**config.decoder_batching.model_dump()))
        self._vision = LocalVisionStage(VisionEncoderEngine(load_vision_tower(chat_model_path)), config.limits)
        self._chat = ChatPipeline(self._vision, ChatDecoder(self._decoder, cache), cache,
                                  self._decoder.prompt_builder)
        self._denoiser = LocalDenoiserStage(
            DenoiserEngine.from_pretrained(image_model_path, max_image_size=config.images.max_size))
        self._images = TextToImagePipeline(
            LocalTextEncoderStage(TextEncoderEngine.from_pretrained(image_model_path)), self._denoiser, cache)

    def stats(self) -> dict[str, int]:
        """This replica's work: images encoded for chat, images generated."""
        return {"images_encoded": self._vision.images_encoded, "images_generated": self._denoiser.images_generated}

    @monolith_http.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @monolith_http.get("/v1/models")
    def models(self) -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "triptych"}
                                           for name in (self._chat_model, self._image_model)]}

    @monolith_http.post("/v1/chat/completions")
    async def chat_completions(self, raw: Request):
        try:
            body = await _body(raw)
            request, stream, include_usage = await asyncio.to_thread(
                parse_chat_body, body, self._config.chat, self._config.limits)
            await asyncio.to_thread(validate_chat_request, request, self._config.limits)
            events = self._chat.run(request)
            first = await anext(events)  # request errors and a full engine surface before any byte is sent
        except (RequestError, OverloadedError) as exc:
            return _error(exc)
        chunks = _chat_chunks(CompletionIds(self._chat_model), first, events, include_usage, stream)
        if stream:
            return StreamingResponse(chunks, media_type="text/event-stream")
        return [chunk async for chunk in chunks][-1]

    @monolith_http.post("/v1/images/generations")
    async def images_generations(self, raw: Request):
        try:
            request = parse_image_body(await _body(raw), self._config.images)
            validate_image_request(request, self._config.images.max_size)
            results = [event async for event in self._images.run(request) if isinstance(event, ImageResult)]
        except RequestError as exc:
            return _error(exc)
        return images_body(results[-1])

    def __del__(self):
        self._decoder.close()


def app_builder(args: Mapping[str, Any] | None = None) -> Application:
    """Serve's builder: the monolith application from a `TriptychConfig` mapping (replicas: its `ingress`)."""
    config = load_config(args, source="the monolith's args")
    chat_model = str(resolve_chat_model(config.profile, config.model_dir, config.chat_model))
    image_model = str(resolve_image_model(config.profile, config.model_dir, config.image_model))
    cache_server = None
    if config.cache.enabled and config.cache.redis_url is None:
        cache_server = CacheServer.bind(config.cache.embedded_maxmemory_mb)
    return Monolith.options(**config.ingress.serve_options()).bind(config, chat_model, image_model, cache_server)
