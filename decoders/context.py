"""The context-window check, shared by the decoder engine and the edge (before any stage runs)."""

from __future__ import annotations

from triptych.errors import ContextLengthError


def check_fits(
    prompt_len: int, max_tokens: int, context_length: int, model_id: str, visual_tokens: int | None = None
) -> None:
    """Raise ContextLengthError("messages", ...) if prompt_len + max_tokens exceeds context_length.

    ``prompt_len`` counts every prompt token, visual tokens included; ``visual_tokens`` (how many of
    them are visual) is only used in the message.
    """
    if prompt_len + max_tokens > context_length:
        visual = f" (incl. {visual_tokens} visual)" if visual_tokens is not None else ""
        raise ContextLengthError(
            "messages",
            f"{prompt_len} prompt tokens{visual} + max_tokens {max_tokens} exceed the context of "
            f"{context_length} tokens of model {model_id!r}; shorten the messages, send fewer "
            f"or more strongly pruned images, or lower max_tokens",
        )
