"""`LLMDecoder` deployment: streams TextDeltas from prompt ids + visual embeddings (DecoderEngineProtocol)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from ray import serve

from decoders.engine import LLMEngine
from decoders.protocol import DecoderEngineProtocol
from models import load_language_model
from triptych.types import DecoderInfo, SamplingParams, TextDelta


@serve.deployment
class LLMDecoder:
    def __init__(self, model_path: str):
        self._engine: DecoderEngineProtocol = LLMEngine(load_language_model(model_path))
        self._requests = 0

    def info(self) -> DecoderInfo:
        return self._engine.info()

    def generate(
        self, prompt_ids: list[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> Iterator[TextDelta]:
        # A sync generator: Serve runs it in a thread, so the replica's event loop stays free.
        self._requests += 1
        yield from self._engine.generate(prompt_ids, image_embeds, params)

    def stats(self) -> dict[str, int]:
        return {"requests": self._requests}
