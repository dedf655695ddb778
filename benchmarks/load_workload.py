"""The load benchmark's traffic: which requests, in what mix, with which images (``benchmarks.load``).

A mix is ``kind=weight`` entries (``chat=0.8,image=0.2``); each request's kind is drawn by weight from a
seeded generator, so one ``--seed`` gives the same sequence every run. Chat requests carry one image:
with probability ``repeat_fraction`` one of a small pool of repeated images (cache hits once each was
seen), else a fresh image nobody sent before (a miss), so the cache hit rate is a knob. Fresh images
are salted per run, so a second run against the same server still misses.

Adding a kind (embeddings, once ``POST /v1/embeddings`` and ``Embed`` exist): a name in ``KINDS``,
what its ``RequestSpec`` carries in ``WorkloadGenerator._spec``, and one method per sender in
``benchmarks.load_transports`` (``HttpSender`` and ``GrpcSender``, in their kind -> method maps).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.chat_paths import QUESTION, photo_bytes

KINDS = ("chat", "image")
IMAGE_PROMPT = "a red circle above a blue square"
PHOTO_SIZE = (320, 240)


def parse_mix(text: str) -> dict[str, float]:
    """``"chat=0.8,image=0.2"`` (or ``"chat"``: weight 1) -> {kind: weight}; ValueError names the entry."""
    mix: dict[str, float] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        kind, _, weight_text = entry.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown entry {kind!r} (allowed: {', '.join(KINDS)})")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(f"entry {entry!r}: the weight must be a number") from None
        if not weight > 0:  # also refuses NaN
            raise ValueError(f"entry {entry!r}: the weight must be > 0")
        if kind in mix:
            raise ValueError(f"entry {kind!r} appears twice")
        mix[kind] = weight
    if not mix:
        raise ValueError("no entries (e.g. chat=0.8,image=0.2)")
    return mix


@dataclass(frozen=True)
class WorkloadOptions:
    """What every request of one run looks like."""

    mix: dict[str, float]
    repeat_fraction: float = 0.5  # chat requests that reuse a pool image (the cache-hit knob)
    pool_size: int = 4  # distinct repeated images
    max_tokens: int = 32  # chat: new tokens per request (greedy)
    image_steps: int = 4  # text-to-image: denoising steps
    image_size: int = 64  # text-to-image: width = height
    seed: int = 0


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: its kind and everything its sender needs."""

    index: int
    kind: str
    prompt: str
    image: bytes | None = None  # chat: the picture
    repeated: bool = False  # chat: the picture comes from the repeated pool
    max_tokens: int = 0  # chat
    steps: int = 0  # image
    size: int = 0  # image
    seed: int = 0  # image: the sampling seed


class WorkloadGenerator:
    """Draws ``RequestSpec``s in a reproducible order (kinds and pool picks depend only on ``seed``)."""

    def __init__(self, options: WorkloadOptions):
        self.options = options
        self._rng = random.Random(options.seed)
        self._salt = random.SystemRandom().randrange(2**40)  # fresh images differ between runs
        self._pool = [photo_bytes(options.seed * 1000 + i, PHOTO_SIZE) for i in range(options.pool_size)]
        self._kinds, self._weights = list(options.mix), list(options.mix.values())
        self._count = 0

    @property
    def pool(self) -> list[bytes]:
        """The repeated images (a warm-up sends each once, so later uses are hits)."""
        return list(self._pool)

    def take(self, n: int) -> list[RequestSpec]:
        """The next ``n`` requests (images made now, so sending them costs the driver nothing)."""
        return [self._spec() for _ in range(n)]

    def _spec(self) -> RequestSpec:
        index, self._count = self._count, self._count + 1
        kind = self._rng.choices(self._kinds, self._weights)[0]
        options = self.options
        if kind == "chat":
            repeated = bool(self._pool) and self._rng.random() < options.repeat_fraction
            image = (self._pool[self._rng.randrange(len(self._pool))] if repeated
                     else photo_bytes(self._salt + index, PHOTO_SIZE))
            return RequestSpec(index, kind, QUESTION, image=image, repeated=repeated,
                               max_tokens=options.max_tokens)
        return RequestSpec(index, kind, IMAGE_PROMPT, steps=options.image_steps, size=options.image_size,
                           seed=options.seed + index)
