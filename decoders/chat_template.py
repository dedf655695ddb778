"""Chat messages -> prompt token ids, with each image placeholder expanded to its visual tokens.

The tokenizer's own Jinja chat template does the formatting, so a real checkpoint's template
works unchanged. Messages are passed in the OpenAI / HF multimodal shape: ``content`` is a
list of ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` parts, and the template must
write ``image_token`` once for every image part.

Control tokens typed by the user (``<image>``, ``</s>``, ...) are encoded as plain text
(``sanitize_control_tokens=True``), so only the template's own placeholders become image tokens:
a user cannot forge an image slot or end a turn early.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from triptych.errors import RequestError
from triptych.types import ChatMessage, ImagePart, TextPart

ROLES = ("system", "user", "assistant")


def to_hf_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Convert our ChatMessages into HF chat-template messages (content = list of typed parts)."""
    hf_messages = []
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise RequestError(f"messages[{i}].role", f"got {message.role!r}; allowed: {', '.join(ROLES)}")
        content: list[dict[str, str]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image"})
            else:
                raise TypeError(f"messages[{i}] has a part of unknown type {type(part).__name__}")
        hf_messages.append({"role": message.role, "content": content})
    return hf_messages


def count_images(messages: Sequence[ChatMessage]) -> int:
    """Number of ImageParts over all messages, in prompt order."""
    return sum(isinstance(part, ImagePart) for message in messages for part in message.parts)


class ChatPromptBuilder:
    """Renders chats with a tokenizer's chat template and expands image placeholders.

    Args:
        tokenizer: a ``PreTrainedTokenizerFast`` with a ``chat_template`` that writes ``image_token``
            for every ``{"type": "image"}`` part.
        image_token: the placeholder text the template writes (e.g. ``"<image>"``).
        image_token_id: its id; each placeholder becomes ``visual_tokens_per_image[i]`` copies of it.
    """

    def __init__(self, tokenizer, image_token: str, image_token_id: int):
        if tokenizer.convert_tokens_to_ids(image_token) != image_token_id:
            raise ValueError(
                f"image_token {image_token!r} is not token id {image_token_id} in this tokenizer"
            )
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = image_token_id

    def render_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Template-rendered ids with one ``image_token_id`` per image and the assistant prompt appended."""
        if not messages:
            raise RequestError("messages", "is empty; at least one message is required")
        ids = self.tokenizer.apply_chat_template(
            to_hf_messages(messages),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
            sanitize_control_tokens=True,  # user-typed "<image>" stays text, see module docstring
        )
        return list(ids)

    def build(self, messages: Sequence[ChatMessage], visual_tokens_per_image: Sequence[int]) -> list[int]:
        """Prompt ids for ``messages`` with the i-th image placeholder repeated ``visual_tokens_per_image[i]`` times.

        Raises ValueError when the number of images in ``messages``, the number of counts given, and the
        number of placeholders the template wrote do not all agree, or when a count is negative.
        """
        n_images = count_images(messages)
        if n_images != len(visual_tokens_per_image):
            raise ValueError(
                f"messages contain {n_images} images but visual_tokens_per_image has "
                f"{len(visual_tokens_per_image)} entries"
            )
        if any(int(k) < 0 for k in visual_tokens_per_image):
            raise ValueError(f"visual_tokens_per_image must be >= 0, got {list(visual_tokens_per_image)}")
        ids = self.render_ids(messages)
        n_placeholders = sum(t == self.image_token_id for t in ids)
        if n_placeholders != n_images:
            raise ValueError(
                f"the chat template wrote {n_placeholders} {self.image_token!r} placeholders for {n_images} "
                f"images; it must write exactly one per image part"
            )
        expanded: list[int] = []
        image_index = 0
        for t in ids:
            if t == self.image_token_id:
                expanded.extend([self.image_token_id] * int(visual_tokens_per_image[image_index]))
                image_index += 1
            else:
                expanded.append(t)
        return expanded
