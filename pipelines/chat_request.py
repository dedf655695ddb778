"""The typed chat request every API converts to, and its edge validation (field-named errors)."""

from __future__ import annotations

from dataclasses import dataclass

from decoders.sampling import check_sampling_params
from encoders.image_io import load_image
from encoders.pruning import get_pruner
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams
    pruning_method: str
    visual_token_keep_ratio: float
    visual_token_count: int | None = None  # absolute per-image budget; overrides the ratio

    @property
    def images(self) -> list[bytes]:
        return [p.data for m in self.messages for p in m.parts if isinstance(p, ImagePart)]


def validate_chat_request(request: ChatRequest, limits: Limits) -> None:
    """Raise RequestError naming the first invalid field; images are fully decoded once here."""
    if not request.messages:
        raise RequestError("messages", "must contain at least one message")
    check_chat_size(request, limits)
    image_count = 0
    for i, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise RequestError(f"messages[{i}].role", f"{message.role!r} is not one of {', '.join(ROLES)}")
        if not message.parts:
            raise RequestError(f"messages[{i}].content", "must not be empty")
        for j, part in enumerate(message.parts):
            if isinstance(part, ImagePart):
                image_count += 1
                load_image(
                    part.data,
                    field=f"messages[{i}].content[{j}]",
                    max_pixels=limits.max_image_pixels,
                    max_bytes=limits.max_image_bytes,
                )
            elif not isinstance(part, TextPart):
                raise RequestError(f"messages[{i}].content[{j}]", "must be a text or an image part")
    if image_count > limits.max_images_per_request:
        raise RequestError(
            "messages", f"{image_count} images; at most {limits.max_images_per_request} per request are allowed"
        )
    has_text = any(isinstance(p, TextPart) and p.text.strip() for m in request.messages for p in m.parts)
    if not has_text and image_count == 0:
        raise RequestError("messages", "contain no text and no image")
    check_sampling_params(request.sampling, max_tokens_limit=limits.max_tokens)
    get_pruner(request.pruning_method)
    if not 0.0 < request.visual_token_keep_ratio <= 1.0:
        raise RequestError(
            "visual_token_keep_ratio", f"{request.visual_token_keep_ratio} is outside (0, 1]"
        )
    if request.visual_token_count is not None and request.visual_token_count < 1:
        raise RequestError("visual_token_count", f"{request.visual_token_count} must be >= 1")


def check_chat_size(request: ChatRequest, limits: Limits) -> None:
    """The bounds on a request's shape, checked before any image is decoded or any text tokenized:
    `limits.max_messages`, `max_content_parts` per message, `max_prompt_chars` of text in all."""
    if len(request.messages) > limits.max_messages:
        raise RequestError("messages", f"{len(request.messages)} messages; at most {limits.max_messages} allowed")
    for i, message in enumerate(request.messages):
        if len(message.parts) > limits.max_content_parts:
            raise RequestError(f"messages[{i}].content",
                               f"{len(message.parts)} content parts; at most {limits.max_content_parts} allowed")
    chars = sum(len(p.text) for m in request.messages for p in m.parts if isinstance(p, TextPart))
    if chars > limits.max_prompt_chars:
        raise RequestError("messages", f"{chars} characters of text; at most {limits.max_prompt_chars} allowed")
