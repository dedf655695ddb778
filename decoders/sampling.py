"""Chat sampling knobs: their one validation rule (edge and engine), and next-token choice from one
row of logits (greedy, or temperature + top-p nucleus sampling)."""

from __future__ import annotations

import torch

from triptych.errors import RequestError
from triptych.types import SamplingParams

# OpenAI's ranges (temperature in [0, 2], top_p in (0, 1]), so a client written for its API gets
# the same answers here; top_p 0 would keep no token at all.
MAX_TEMPERATURE = 2.0
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def check_sampling_params(params: SamplingParams, max_tokens_limit: int | None = None) -> None:
    """Raise RequestError naming the field when a decoding knob is out of range.

    The one rule for chat sampling, used by the edge (``pipelines.chat_request``, with the
    deployment's ``Limits.max_tokens`` as ``max_tokens_limit``) and by ``DecoderEngine`` itself
    (no limit: the context check bounds it). Rules: ``max_tokens`` an integer in 1..limit,
    ``temperature`` a number in 0..2, ``top_p`` a number in (0, 1], ``seed`` null or an integer
    in ``SEED_RANGE``. NaN and infinities are outside every range; booleans are not numbers.
    """
    n = _typed("max_tokens", params.max_tokens, integer=True)
    if max_tokens_limit is not None and not 1 <= n <= max_tokens_limit:
        raise RequestError("max_tokens", f"{n} is outside 1..{max_tokens_limit}")
    if n < 1:
        raise RequestError("max_tokens", f"{n} must be >= 1")
    t = _typed("temperature", params.temperature, integer=False)
    if not 0.0 <= t <= MAX_TEMPERATURE:  # NaN fails every comparison
        raise RequestError("temperature", f"{t} is outside 0..{MAX_TEMPERATURE:g}")
    p = _typed("top_p", params.top_p, integer=False)
    if not 0.0 < p <= 1.0:
        raise RequestError("top_p", f"{p} is outside (0, 1]")
    if params.seed is not None:
        seed = _typed("seed", params.seed, integer=True)
        if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise RequestError("seed", f"{seed} is outside -2**63..2**64-1")


def _typed(field: str, value: object, integer: bool) -> int | float:
    """``value`` if it is an integer (``integer``) or any real number; bool is neither."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise RequestError(field, f"must be {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    return value


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
