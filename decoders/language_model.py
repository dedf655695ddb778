"""What the text side is built from: ChatTokenizer (prompts at the ingress) and LanguageModelParts (decoder).

Model sources (``models.sources``) load them from a checkpoint, as they load ``encoders.vision_tower``
towers for the vision side; this file imports no model code, so engines need nothing from ``models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class LanguageModelParts:
    """The decoder side of a VLM checkpoint, loaded in eval mode, float32.

    ``model(inputs_embeds=(B, T, D), past_key_values=..., use_cache=True, attention_mask=...)``
    returns an output with ``.logits`` ``(B, T, V)`` and ``.past_key_values``. ``embed_tokens``
    maps token ids ``(B, T)`` to ``(B, T, D)``. The prompt holds one ``image_token`` per image; the
    decoder replaces that single position with the image's K visual token embeddings ``(K, D)``.
    """

    tokenizer: PreTrainedTokenizerBase
    model: nn.Module
    embed_tokens: nn.Module
    image_token: str
    image_token_id: int
    context_length: int
    model_id: str

    @classmethod
    def from_model(cls, model: nn.Module, chat: ChatTokenizer) -> LanguageModelParts:
        """Parts for a loaded causal LM whose prompts ``chat`` builds."""
        return cls(
            tokenizer=chat.tokenizer,
            model=model,
            embed_tokens=model.get_input_embeddings(),
            image_token=chat.image_token,
            image_token_id=chat.image_token_id,
            context_length=chat.context_length,
            model_id=chat.model_id,
        )


@dataclass(frozen=True)
class ChatTokenizer:
    """The tokenizer half only (no weights loaded): enough to build and count prompts at the ingress.

    ``tokenizer.apply_chat_template`` writes one ``image_token`` per image part.
    """

    tokenizer: PreTrainedTokenizerBase
    image_token: str
    image_token_id: int
    context_length: int
    model_id: str
