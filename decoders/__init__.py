"""LLM decoder stage engine: chat prompt -> token ids -> streamed text (plain PyTorch, no ray)."""

from decoders.chat_template import ChatPromptBuilder
from decoders.detokenizer import IncrementalDetokenizer
from decoders.engine import LLMEngine
from decoders.sampling import check_sampling_params, next_token

__all__ = [
    "ChatPromptBuilder",
    "IncrementalDetokenizer",
    "LLMEngine",
    "check_sampling_params",
    "next_token",
]
