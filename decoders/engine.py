"""LLMEngine: prompt ids + visual tokens -> streamed TextDeltas (one prefill, then KV-cached decoding).

Plain PyTorch on the parts from ``models.load_language_model``: the engine builds
``inputs_embeds`` itself (text embeddings with image rows replaced by the vision stage's tokens),
so the vision tower never has to live next to the decoder.

``generate_ids`` streams token ids; ``generate`` wraps it with incremental detokenization and
timings. Both return generators. Grad mode is switched off (``torch.inference_mode``) only around
each compute step, never across a ``yield``, so the consumer's thread is never left in inference
mode and the generator may be advanced from different threads. A consumer that stops early just
stops iterating (or calls ``close()``): the KV cache lives only in the generator's frame and is
freed with it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import torch

from decoders.chat_template import ChatPromptBuilder
from decoders.context import check_fits
from decoders.detokenizer import IncrementalDetokenizer
from decoders.sampling import check_sampling_params, make_generator, next_token
from triptych.types import DecoderInfo, SamplingParams, TextDelta

if TYPE_CHECKING:
    from decoders.language_model import LanguageModelParts


def _eos_ids(parts: LanguageModelParts) -> frozenset[int]:
    """EOS ids from the tokenizer plus the model's generation_config (int or list), like ``generate``."""
    ids: set[int] = set()
    if parts.tokenizer.eos_token_id is not None:
        ids.add(int(parts.tokenizer.eos_token_id))
    generation_config = getattr(parts.model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(int(i) for i in configured)
    return frozenset(ids)


class LLMEngine:
    """Streams chat completions from a causal LM given prompt ids and per-image visual tokens.

    Args:
        parts: ``decoders.language_model.LanguageModelParts`` (tokenizer, model, embed_tokens, image_token,
            image_token_id, context_length, model_id).
    """

    def __init__(self, parts: LanguageModelParts):
        self.parts = parts
        self.tokenizer = parts.tokenizer
        self.model = parts.model
        self.embed_tokens = parts.embed_tokens
        self.model_id = parts.model_id
        self._prompt_builder = ChatPromptBuilder(parts.tokenizer, parts.image_token, parts.image_token_id)
        self._eos_ids = _eos_ids(parts)
        forward = getattr(self.model, "forward", self.model)
        # Compute prefill logits for the last position only when the model allows it (as `generate` does).
        self._logits_to_keep = "logits_to_keep" in inspect.signature(forward).parameters

    @property
    def context_length(self) -> int:
        """Maximum prompt + generated tokens the model accepts."""
        return int(self.parts.context_length)

    def info(self) -> DecoderInfo:
        """Model id and context length."""
        return DecoderInfo(model_id=self.model_id, context_length=self.context_length)

    @property
    def image_token_id(self) -> int:
        return int(self.parts.image_token_id)

    @property
    def prompt_builder(self) -> ChatPromptBuilder:
        """Builds prompt ids (visual placeholders expanded) from ChatMessages with this tokenizer."""
        return self._prompt_builder

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos_ids

    def check_fits(self, prompt_len: int, max_tokens: int, visual_tokens: int | None = None) -> None:
        """Raise ContextLengthError("messages", ...) if prompt_len + max_tokens exceeds the context."""
        check_fits(prompt_len, max_tokens, self.context_length, self.model_id, visual_tokens)

    def embed_prompt(self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """``inputs_embeds`` (1, T, D): token embeddings with the image-token rows replaced, in order,
        by the rows of ``image_embeds`` (each (K_i, D)). Raises ValueError on a count or width mismatch."""
        weight = self.embed_tokens.weight  # (V, D)
        for e in image_embeds:
            if e.dim() != 2 or e.shape[1] != weight.shape[1]:
                raise ValueError(f"each image embedding must be (K, {weight.shape[1]}), got {tuple(e.shape)}")
        ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=weight.device)  # (T,)
        is_image = ids == self.image_token_id  # (T,)
        n_slots = int(is_image.sum())
        n_rows = sum(int(e.shape[0]) for e in image_embeds)
        if n_slots != n_rows:
            raise ValueError(
                f"prompt has {n_slots} image-token slots but image_embeds has {n_rows} rows "
                f"over {len(image_embeds)} images"
            )
        with torch.inference_mode():
            # the image id may lie outside the embedding table in some checkpoints; those rows are replaced
            embeds = self.embed_tokens(ids.masked_fill(is_image, 0))  # (T, D)
            if n_rows:
                embeds[is_image] = torch.cat(
                    [e.to(embeds.device, embeds.dtype) for e in image_embeds]
                )  # (K, D)
        return embeds.unsqueeze(0)  # (1, T, D)

    def generate(
        self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> Generator[TextDelta, None, None]:
        """Stream the completion of ``prompt_ids`` as TextDeltas.

        ``image_embeds`` holds one (K_i, D) tensor per image, in prompt order, filling the K_1 + K_2 + ...
        image-token slots of ``prompt_ids``. Validation (sampling params, context length, image rows)
        happens here, before the first ``next()``. Each delta carries the new text as soon as it is
        complete; the last one has ``finish_reason`` "stop" (EOS, whose text is not emitted) or "length"
        (``max_tokens`` reached), ``completion_tokens`` and ``timings_ms`` {"prefill", "decode"}.
        """
        token_ids = self.generate_ids(prompt_ids, image_embeds, params)
        return self._stream_text(token_ids, params.max_tokens)

    def generate_ids(
        self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> Generator[int, None, None]:
        """The generated token ids, one per ``next()``, without the EOS and at most ``max_tokens``.

        Same arguments and eager validation as ``generate``; seeded sampling gives the same ids on every
        call. The first ``next()`` runs the prefill; each later one runs one KV-cached decode step.
        """
        inputs_embeds = self.prepare_prompt(prompt_ids, image_embeds, params)  # (1, T, D)
        return self._decode_loop(inputs_embeds, params)

    def prepare_prompt(
        self,
        prompt_ids: Sequence[int],
        image_embeds: Sequence[torch.Tensor],
        params: SamplingParams,
        context_length: int | None = None,
    ) -> torch.Tensor:
        """Validate one request and return its ``inputs_embeds`` (1, T, D).

        Checks the sampling params, a non-empty prompt, prompt + ``max_tokens`` against
        ``context_length`` (default: the model's) and the image rows; raises before any compute.
        Shared by ``generate_ids`` and ``decoders.batching.BatchingEngine.submit``.
        """
        check_sampling_params(params)
        if len(prompt_ids) == 0:
            raise ValueError("prompt_ids is empty")
        n_visual = sum(int(e.shape[0]) for e in image_embeds)
        limit = self.context_length if context_length is None else context_length
        check_fits(len(prompt_ids), params.max_tokens, limit, self.model_id, n_visual)
        return self.embed_prompt(prompt_ids, image_embeds)  # (1, T, D)

    @property
    def accepts_logits_to_keep(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (prefill then computes the last row only)."""
        return self._logits_to_keep

    def _forward(self, inputs_embeds: torch.Tensor, cache, prefill: bool):
        kwargs = {"logits_to_keep": 1} if prefill and self._logits_to_keep else {}
        return self.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True, **kwargs)

    def _decode_loop(self, inputs_embeds: torch.Tensor, params: SamplingParams) -> Generator[int, None, None]:
        generator = make_generator(params, inputs_embeds.device)
        with torch.inference_mode():
            out = self._forward(inputs_embeds, None, prefill=True)  # logits (1, T or 1, V)
            cache = out.past_key_values
            token = next_token(out.logits[0, -1], params, generator)
        n_generated = 0
        while token not in self._eos_ids:
            yield token  # outside inference_mode: the consumer's grad mode is left alone
            n_generated += 1
            if n_generated >= params.max_tokens:
                return
            with torch.inference_mode():
                step_ids = torch.tensor([[token]], device=inputs_embeds.device)  # (1, 1)
                out = self._forward(self.embed_tokens(step_ids), cache, prefill=False)  # embeds (1, 1, D)
                cache = out.past_key_values
                token = next_token(out.logits[0, -1], params, generator)  # logits (V,); int() syncs

    def _stream_text(
        self, token_ids: Generator[int, None, None], max_tokens: int
    ) -> Generator[TextDelta, None, None]:
        """Detokenize ``token_ids`` into deltas; time spent inside ``next(token_ids)`` is the compute."""
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        timings = {"prefill": 0.0, "decode": 0.0}
        n_generated = 0
        try:
            while True:
                start = time.perf_counter()
                token = next(token_ids, None)
                timings["prefill" if n_generated == 0 else "decode"] += (time.perf_counter() - start) * 1000
                if token is None:  # EOS
                    yield TextDelta(detokenizer.flush(), "stop", n_generated, dict(timings))
                    return
                n_generated += 1
                text = detokenizer.push(token)
                if n_generated >= max_tokens:
                    yield TextDelta(text + detokenizer.flush(), "length", n_generated, dict(timings))
                    return
                if text:
                    yield TextDelta(text, completion_tokens=n_generated)
        finally:
            token_ids.close()  # frees the KV cache now, also when the consumer stopped early
