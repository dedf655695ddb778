"""The typed OpenAPI description of the HTTP API: pydantic models of every request and response body.

The handlers read raw bodies and parse them with the named-field parsers (`openai_chat`,
`openai_images`, ...), whose messages say which field, what was wrong and what is allowed, and which
run CPU work off the event loop; so these models document the bodies rather than validate them:
`install_openapi` puts them into `/openapi.json` (request bodies, 200 bodies, and the one error shape
for every 4xx / 5xx). Client generators and schemathesis read that spec.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, server_overloaded, server_error, ...")
    param: str | None = Field(description="the request field at fault, e.g. messages[0].content[1].image_url.url")
    code: str | None = Field(description="invalid_api_key, request_too_large, ... or null")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- chat ----------------------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str = Field(description="a data:image/...;base64,... URL (remote URLs are refused)")
    detail: str | None = None


class ImageUrlPart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImageUrlPart]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    pruning_method: str | None = Field(None, description="extension: none, cls_attention, visionzip, tome, divprune")
    visual_token_keep_ratio: float | None = Field(None, gt=0, le=1, description="extension")
    visual_token_count: int | None = Field(None, ge=1, description="extension: visual tokens kept per image")


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    visual_tokens_in: int
    visual_tokens_kept: int
    cache_hit: bool
    timings_ms: dict[str, float]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    """The non-stream answer; with `stream: true` the body is `text/event-stream` chunks ending in `[DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    timings_ms: dict[str, float]


# ---- images --------------------------------------------------------------------------------------


class ImageGenerationRequest(BaseModel):
    prompt: str
    model: str | None = None
    n: int | None = Field(None, ge=1)
    size: str | None = Field(None, description="WIDTHxHEIGHT, e.g. 64x64, or auto")
    response_format: Literal["b64_json"] | None = None
    stream: bool = Field(False, description="extension: SSE progress events, then the result")
    negative_prompt: str | None = Field(None, description="extension")
    steps: int | None = Field(None, ge=1, description="extension")
    sampler: str | None = Field(None, description="extension: ddim, euler, dpmpp_2m, unipc, lcm")
    guidance_scale: float | None = Field(None, ge=0, description="extension")
    seed: int | None = Field(None, description="extension")
    cache_interval: int | None = Field(None, ge=1, description="extension: DeepCache interval")


class GeneratedImage(BaseModel):
    b64_json: str
    seed: int


class ImagesResponse(BaseModel):
    created: int
    data: list[GeneratedImage]
    cache_hit: bool
    timings_ms: dict[str, float]


# ---- embeddings ----------------------------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    input: str | list[str] | list[TextPart | ImageUrlPart] = Field(
        description="a text, texts, or typed items (text / image_url with a data: URL), mixed")
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = Field(None, description="base64: little-endian float32")
    dimensions: int | None = Field(None, ge=1, description="must equal the model's, if given")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage
    cache_hit: bool
    timings_ms: dict[str, float]


# ---- models, health, workflows -------------------------------------------------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok"]


class WorkflowValueType(BaseModel):
    type: str = Field(description="text, image, int, float, bool, embedding, list[T], A | B")
    required: bool | None = None
    default: Any = None
    description: str | None = None


class WorkflowDescription(BaseModel):
    name: str
    description: str
    inputs: dict[str, WorkflowValueType]
    outputs: dict[str, WorkflowValueType]


class WorkflowList(BaseModel):
    object: Literal["list"]
    data: list[WorkflowDescription]


class WorkflowRunRequest(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict, description="by input name; images as data: URLs")
    stream: bool = Field(False, description="SSE step events, then the result")


class WorkflowStep(BaseModel):
    name: str
    started_ms: float
    ended_ms: float
    cache_hit: bool | None


class WorkflowRunResponse(BaseModel):
    workflow: str
    outputs: dict[str, Any] = Field(description="by output name; images as base64 PNG strings")
    steps: list[WorkflowStep]


# (method, path) -> (request body model or None, 200 body model)
_ROUTES: dict[tuple[str, str], tuple[type[BaseModel] | None, type[BaseModel]]] = {
    ("post", "/v1/chat/completions"): (ChatCompletionRequest, ChatCompletion),
    ("post", "/v1/images/generations"): (ImageGenerationRequest, ImagesResponse),
    ("post", "/v1/embeddings"): (EmbeddingsRequest, EmbeddingsResponse),
    ("get", "/v1/models"): (None, ModelList),
    ("get", "/healthz"): (None, Health),
    ("get", "/v1/workflows"): (None, WorkflowList),
    ("post", "/v1/workflows/{name}"): (WorkflowRunRequest, WorkflowRunResponse),
}
_ERRORS = {"400": "a bad request: `param` names the field", "401": "a missing or wrong API key",
           "404": "no such path or workflow", "405": "wrong method", "408": "past the request's deadline",
           "413": "the body is over limits.max_request_bytes", "503": "overloaded, retry later",
           "500": "a failure inside the server"}  # fmt: skip


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (served at /openapi.json) describe bodies with the models above."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _schema(app)
        return app.openapi_schema

    app.openapi = openapi


def _schema(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    models = {ErrorResponse, *(m for pair in _ROUTES.values() for m in pair if m is not None)}
    names, definitions = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))
    error = {"content": {"application/json": {"schema": names[(ErrorResponse, "validation")]}}}
    for (method, path), (request, response) in _ROUTES.items():
        operation = spec.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue  # the route is not mounted on this server
        if request is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": names[(request, "validation")]}}}
        operation["responses"] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": names[(response, "validation")]}}},
            **{code: {"description": text, **error} for code, text in _ERRORS.items()},
        }
    return spec
