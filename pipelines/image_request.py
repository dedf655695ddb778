"""The typed text-to-image request every API converts to, and its edge validation."""

from __future__ import annotations

from dataclasses import dataclass

from denoisers.params import validate_image_params
from triptych.errors import RequestError
from triptych.types import ImageParams


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    negative_prompt: str
    params: ImageParams


def validate_image_request(request: ImageRequest, max_size: int) -> None:
    """Raise RequestError naming the first invalid field (the prompt's token length is checked by
    the text encoder stage, which owns the tokenizer)."""
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise RequestError("prompt", "must be a non-empty string")
    if not isinstance(request.negative_prompt, str):
        raise RequestError("negative_prompt", "must be a string")
    validate_image_params(request.params, max_size=max_size)
