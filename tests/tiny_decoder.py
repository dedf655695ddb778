"""Test fixture: tiny, self-contained decoder parts: a byte-level tokenizer with a chat
template plus a randomly initialised ``LlamaForCausalLM`` (no files, no model hub, milliseconds).

``tiny_language_model_parts()`` returns an object with the same fields as
``decoders.language_model.LanguageModelParts``, so ``LLMEngine(tiny_language_model_parts())`` works anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, IMAGE = "<s>", "</s>", "<image>"

# OpenAI-style messages: content is a string or a list of {"type": "text"} / {"type": "image"} parts.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class TinyLanguageModelParts:
    """Same fields as ``decoders.language_model.LanguageModelParts``."""

    tokenizer: Any
    model: Any
    embed_tokens: torch.nn.Module
    image_token: str
    image_token_id: int
    context_length: int
    model_id: str


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: one token per UTF-8 byte (256 ids), then <s>, </s>, <image> as special tokens.

    Multi-byte characters span several tokens, which exercises incremental-detokenization hold-back.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([BOS, EOS, IMAGE])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, chat_template=CHAT_TEMPLATE
    )


def tiny_language_model_parts(
    seed: int = 0, context_length: int = 128, hidden_size: int = 32
) -> TinyLanguageModelParts:
    """A 2-layer float32 Llama on CPU over ``tiny_tokenizer()``, deterministic for a given seed."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return TinyLanguageModelParts(
        tokenizer=tokenizer,
        model=model,
        embed_tokens=model.get_input_embeddings(),
        image_token=IMAGE,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        context_length=context_length,
        model_id="tiny-llama-test",
    )
