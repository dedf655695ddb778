"""gRPC chat: triptych.v1 ChatRequest proto -> ChatRequest, and results -> ChatResponse protos.

Proto types never leave the ingress: this module is the only place chat protos are read or built.
"""

from __future__ import annotations

from pipelines.chat_request import ChatRequest
from triptych.config import ChatDefaults
from triptych.errors import RequestError
from triptych.types import ChatMessage, ChatUsage, ImagePart, SamplingParams, TextDelta, TextPart
from triptych.v1 import triptych_pb2 as pb


def chat_request_from_proto(message: pb.ChatRequest, defaults: ChatDefaults) -> ChatRequest:
    def optional(name: str, default):
        return getattr(message, name) if message.HasField(name) else default

    return ChatRequest(
        messages=tuple(_message(m, f"messages[{i}]") for i, m in enumerate(message.messages)),
        sampling=SamplingParams(
            max_tokens=optional("max_tokens", defaults.max_tokens),
            temperature=optional("temperature", defaults.temperature),
            top_p=optional("top_p", defaults.top_p),
            seed=optional("seed", None),
        ),
        pruning_method=optional("pruning_method", defaults.pruning_method),
        visual_token_keep_ratio=optional("visual_token_keep_ratio", defaults.visual_token_keep_ratio),
        visual_token_count=optional("visual_token_count", None),
    )


def _message(message: pb.ChatMessage, field: str) -> ChatMessage:
    parts: list[TextPart | ImagePart] = []
    for j, part in enumerate(message.content):
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append(TextPart(part.text))
        elif kind == "image":
            parts.append(ImagePart(part.image))
        else:
            raise RequestError(f"{field}.content[{j}]", "set either 'text' or 'image'")
    return ChatMessage(role=message.role, parts=tuple(parts))


def delta_to_proto(delta: TextDelta) -> pb.ChatResponse:
    return pb.ChatResponse(delta=delta.text)


def usage_to_proto(usage: ChatUsage, finish_reason: str) -> pb.ChatResponse:
    return pb.ChatResponse(
        finish_reason=finish_reason,
        usage=pb.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            visual_tokens_in=usage.visual_tokens_in,
            visual_tokens_kept=usage.visual_tokens_kept,
            cache_hit=usage.cache_hit,
            timings_ms=usage.timings_ms,
        ),
    )
