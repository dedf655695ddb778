"""The load benchmark's numbers: percentiles, throughput, goodput under an SLO, errors, cache hit rate.

Percentiles interpolate linearly between order statistics (numpy's default, as vLLM's benchmark
reports them). Goodput = successful requests per second that met the SLO (vLLM's ``--goodput``):
a chat request meets it when its TTFT and its time per output token are within bounds, a
text-to-image request when its end-to-end latency is. Throughput divides by the level's duration,
from its start to its last completion.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.load_transports import Record

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Slo:
    """Service-level objective per request (seconds)."""

    ttft_s: float = 2.0  # chat: time to first token
    tpot_s: float = 0.25  # chat: time per output token after the first
    image_e2e_s: float = 15.0  # text-to-image: whole request

    def met_by(self, record: Record) -> bool:
        if not record.ok:
            return False
        if record.kind != "chat":
            return record.e2e_s <= self.image_e2e_s
        tpot = record.tpot_s
        return (record.ttft_s is not None and record.ttft_s <= self.ttft_s
                and (tpot is None or tpot <= self.tpot_s))

    def describe(self) -> str:
        return (f"chat TTFT <= {self.ttft_s * 1000:g} ms and TPOT <= {self.tpot_s * 1000:g} ms; "
                f"image E2E <= {self.image_e2e_s * 1000:g} ms")


@dataclass(frozen=True)
class LevelSummary:
    """One load level, summarised (latencies in ms)."""

    mode: str
    load: float
    requests: int
    ok: int
    retried: int  # requests sent more than once (refused before any byte, then retried)
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    goodput_per_s: float
    cache_hit_rate: float  # among successful chat requests that reported it
    ttft_ms: dict[int, float]
    itl_ms: dict[int, float]
    tpot_ms: dict[int, float]
    chat_e2e_ms: dict[int, float]
    image_e2e_ms: dict[int, float]
    errors: dict[str, int]  # status code -> count

    def row(self) -> dict[str, object]:
        """Flat columns for the CSV."""
        row: dict[str, object] = {
            "mode": self.mode, "load": self.load, "requests": self.requests, "ok": self.ok, "retried": self.retried,
            "duration_s": self.duration_s, "requests_per_s": self.requests_per_s,
            "output_tokens_per_s": self.output_tokens_per_s, "goodput_per_s": self.goodput_per_s,
            "cache_hit_rate": self.cache_hit_rate,
        }
        for name in ("ttft_ms", "itl_ms", "tpot_ms", "chat_e2e_ms", "image_e2e_ms"):
            for q, value in getattr(self, name).items():
                row[f"{name.removesuffix('_ms')}_p{q}_ms"] = value
        row["errors"] = " ".join(f"{code}:{n}" for code, n in sorted(self.errors.items()))
        return row


def summarize(mode: str, load: float, records: Sequence[Record], duration_s: float, slo: Slo) -> LevelSummary:
    """Percentiles, rates, goodput, errors and the cache hit rate of one level's records."""
    ok = [r for r in records if r.ok]
    chat = [r for r in ok if r.kind == "chat"]
    images = [r for r in ok if r.kind == "image"]
    hits = [r.cache_hit for r in chat if r.cache_hit is not None]
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: float("nan"))

    def ms(values: list[float]) -> dict[int, float]:
        return {q: percentile(values, q) * 1000 for q in PERCENTILES}

    return LevelSummary(
        mode=mode, load=load, requests=len(records), ok=len(ok), retried=sum(r.retries > 0 for r in records),
        duration_s=duration_s,
        requests_per_s=per_s(len(ok)),
        output_tokens_per_s=per_s(sum(r.output_tokens for r in chat)),
        goodput_per_s=per_s(sum(slo.met_by(r) for r in ok)),
        cache_hit_rate=sum(hits) / len(hits) if hits else float("nan"),
        ttft_ms=ms([r.ttft_s for r in chat if r.ttft_s is not None]),
        itl_ms=ms([gap for r in chat for gap in r.chunk_gaps_s]),
        tpot_ms=ms([r.tpot_s for r in chat if r.tpot_s is not None]),
        chat_e2e_ms=ms([r.e2e_s for r in chat]),
        image_e2e_ms=ms([r.e2e_s for r in images]),
        errors=dict(Counter(r.status for r in records if not r.ok)),
    )
