"""The typed text-to-image request every API converts to, and its edge validation."""

from __future__ import annotations

from dataclasses import dataclass

from denoisers.params import validate_image_params
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import ImageParams


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    negative_prompt: str
    params: ImageParams


def validate_image_request(
    request: ImageRequest, max_size: int, max_prompt_chars: int = Limits().max_prompt_chars
) -> None:
    """Raise RequestError naming the first invalid field. `max_prompt_chars` (`Limits`) bounds the prompt
    and the negative prompt before any tokenizer sees them; their token length is checked by the text
    encoder stage, which owns the tokenizer."""
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise RequestError("prompt", "must be a non-empty string")
    if not isinstance(request.negative_prompt, str):
        raise RequestError("negative_prompt", "must be a string")
    for field, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
        if len(text) > max_prompt_chars:
            raise RequestError(field, f"{len(text)} characters; at most {max_prompt_chars} allowed")
    validate_image_params(request.params, max_size=max_size)
