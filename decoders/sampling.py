"""Next-token choice from one row of logits: greedy, or temperature + top-p (nucleus) sampling."""

from __future__ import annotations

import math

import torch

from triptych.errors import RequestError
from triptych.types import SamplingParams


def check_sampling_params(params: SamplingParams) -> None:
    """Raise RequestError naming the field when a decoding knob is out of range."""
    if not isinstance(params.max_tokens, int) or params.max_tokens < 1:
        raise RequestError("max_tokens", f"must be an integer >= 1, got {params.max_tokens!r}")
    if not math.isfinite(params.temperature) or params.temperature < 0:
        raise RequestError(
            "temperature", f"must be a finite number >= 0 (0 = greedy), got {params.temperature!r}"
        )
    if not 0.0 <= params.top_p <= 1.0:
        raise RequestError("top_p", f"must be in [0, 1], got {params.top_p!r}")
    if params.seed is not None and not isinstance(params.seed, int):
        raise RequestError("seed", f"must be an integer or null, got {params.seed!r}")


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A generator seeded with ``params.seed`` on ``device`` (None when greedy or unseeded)."""
    if params.temperature == 0 or params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> int:
    """Choose the next token id from ``logits`` (V,).

    temperature 0 is argmax (first index on ties, like ``transformers`` greedy search). Otherwise the
    logits are divided by the temperature, the smallest set of most likely tokens whose probability
    reaches ``top_p`` is kept (always at least the top one), and one token is drawn with ``generator``
    (on the logits' device), so the same seed gives the same tokens.
    """
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    sorted_probs, sorted_ids = torch.sort(probs, descending=True, stable=True)  # (V,), (V,)
    # keep a token if the mass strictly before it is below top_p; the first is always kept
    keep = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < params.top_p  # (V,)
    keep[0] = True
    choice = torch.multinomial(sorted_probs * keep, 1, generator=generator)  # (1,)
    return int(sorted_ids[choice])
