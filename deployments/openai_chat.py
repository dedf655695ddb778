"""OpenAI-compatible chat: JSON body -> ChatRequest, and ChatRequest results -> OpenAI JSON/SSE shapes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from deployments.json_fields import number_field, string_field
from encoders.data_url import decode_image_url
from pipelines.chat_request import ChatRequest
from triptych.config import ChatDefaults, Limits
from triptych.errors import RequestError
from triptych.types import ChatMessage, ChatUsage, ImagePart, SamplingParams, TextPart


def parse_chat_body(body: Any, defaults: ChatDefaults, limits: Limits) -> tuple[ChatRequest, bool, bool]:
    """Returns (request, stream, include_usage). Raises RequestError naming the bad field.

    Data URLs over ``limits.max_image_bytes`` are rejected here, before their base64 is decoded."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "must be a non-empty list of messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    sampling = SamplingParams(
        max_tokens=number_field(max_tokens, "max_tokens", int, defaults.max_tokens),
        temperature=number_field(body.get("temperature"), "temperature", float, defaults.temperature),
        top_p=number_field(body.get("top_p"), "top_p", float, defaults.top_p),
        seed=number_field(body.get("seed"), "seed", int, None),
    )
    request = ChatRequest(
        messages=tuple(_message(m, f"messages[{i}]", limits) for i, m in enumerate(messages)),
        sampling=sampling,
        pruning_method=string_field(body.get("pruning_method"), "pruning_method", defaults.pruning_method),
        visual_token_keep_ratio=number_field(
            body.get("visual_token_keep_ratio"), "visual_token_keep_ratio", float,
            defaults.visual_token_keep_ratio,
        ),
        visual_token_count=number_field(body.get("visual_token_count"), "visual_token_count", int, None),
    )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", "must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("stream_options", "must be an object")
    return request, stream, bool(options.get("include_usage", False))


def _message(raw: Any, field: str, limits: Limits) -> ChatMessage:
    if not isinstance(raw, dict):
        raise RequestError(field, "must be an object with 'role' and 'content'")
    role = raw.get("role")
    if not isinstance(role, str):
        raise RequestError(f"{field}.role", "must be a string")
    content = raw.get("content")
    if isinstance(content, str):
        return ChatMessage(role=role, parts=(TextPart(content),))
    if not isinstance(content, list):
        raise RequestError(f"{field}.content", "must be a string or a list of content parts")
    return ChatMessage(role=role, parts=tuple(content_part(p, f"{field}.content[{j}]", limits) for j, p in enumerate(content)))


def content_part(raw: Any, field: str, limits: Limits) -> TextPart | ImagePart:
    """One OpenAI content part (`text`, or `image_url` with a data: URL); also an embeddings input item."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return TextPart(string_field(raw.get("text"), f"{field}.text", None))
    if kind == "image_url":
        image_url = raw.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            raise RequestError(f"{field}.image_url.url", "must be a string (a data: URL)")
        return ImagePart(decode_image_url(url, f"{field}.image_url.url", limits.max_image_bytes))
    raise RequestError(f"{field}.type", f"{kind!r} is not a supported content part; use 'text' or 'image_url'")


def error_body(message: str, param: str | None, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage_body(usage: ChatUsage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "visual_tokens_in": usage.visual_tokens_in,
        "visual_tokens_kept": usage.visual_tokens_kept,
        "cache_hit": usage.cache_hit,
        "timings_ms": usage.timings_ms,
    }


class CompletionIds:
    """The id / created / model triple every response and chunk of one completion shares."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def completion(self, text: str, finish_reason: str, usage: ChatUsage) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": usage_body(usage),
            "timings_ms": usage.timings_ms,
        }

    def chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        return self._sse({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })

    def usage_chunk(self, usage: ChatUsage) -> str:
        return self._sse({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_body(usage), "timings_ms": usage.timings_ms,
        })

    @staticmethod
    def _sse(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"
