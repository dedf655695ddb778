"""Continuous batching in the decoder, in-process: aggregate output tokens/s, TTFT and inter-token
latency at 1, 8, 16 concurrent streams, the batching engine vs the per-request engine, side by side.

Every stream is one consumer thread that submits a chat (text + one image's visual tokens, greedy)
at the same moment as the others and reads its deltas. "per-request" is what an ``LLMDecoder``
replica does without batching: ``LLMEngine.generate`` in one thread per request (Serve runs each
sync generator in its own thread), each with its own KV cache. "batched" is ``BatchingEngine``:
one loop thread, one preallocated slot cache, every stream in the same decode step. A second table
compares prefill chunk budgets (``max_tokens_per_step``) at the largest stream count.

Visual tokens are random rows (the decoder's cost does not depend on their values); the default
count is the bench tower's 576 patches at the default keep ratio 0.5. Rounds alternate the engines
so machine noise hits both; the first round is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    add_common_arguments,
    configure_process,
    emit,
    log,
    model_root,
    resolve_common_arguments,
)
from benchmarks.report import Samples, load_average, machine_summary, markdown_table
from decoders.batching import BatchingConfig, BatchingEngine
from decoders.engine import LLMEngine
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextDelta, TextPart

QUESTION = "Describe the picture in detail."
Request = tuple[list[int], list[torch.Tensor], SamplingParams]
METRICS = ("tok_s", "ttft_p50_ms", "itl_p50_ms", "itl_p95_ms", "itl_max_ms")
Generate = Callable[[list[int], list[torch.Tensor], SamplingParams], Iterator[TextDelta]]


@dataclass
class Run:
    """One burst of concurrent streams."""

    tokens: int
    wall_s: float
    ttft_ms: list[float]
    gaps_ms: list[float]  # per generated token after the first: delta gap / tokens in the delta

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s


@dataclass
class Series:
    """Medians over rounds of one (engine, streams) cell."""

    tok_s: Samples = field(default_factory=Samples)
    ttft_p50_ms: Samples = field(default_factory=Samples)
    itl_p50_ms: Samples = field(default_factory=Samples)
    itl_p95_ms: Samples = field(default_factory=Samples)
    itl_max_ms: Samples = field(default_factory=Samples)

    def add(self, run: Run) -> None:
        self.tok_s.add(run.tok_s)
        self.ttft_p50_ms.add(percentile(run.ttft_ms, 50))
        self.itl_p50_ms.add(percentile(run.gaps_ms, 50))
        self.itl_p95_ms.add(percentile(run.gaps_ms, 95))
        self.itl_max_ms.add(max(run.gaps_ms, default=float("nan")))

    def as_dict(self) -> dict[str, Any]:
        medians = {name: getattr(self, name).median for name in METRICS}
        return medians | {"tok_s_samples": self.tok_s.values}


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_streams(generate: Generate, requests: Sequence[Request]) -> Run:
    """Start one consumer thread per request at once; time every delta."""
    start_line = threading.Barrier(len(requests) + 1)
    results: list[tuple[int, float, list[float]] | BaseException] = [None] * len(requests)  # type: ignore[list-item]

    def consume(i: int) -> None:
        try:
            start_line.wait()
            t0 = time.perf_counter()
            stream = generate(*requests[i])
            last, gaps, ttft, n = t0, [], None, 0
            for delta in stream:
                now = time.perf_counter()
                new = delta.completion_tokens - n
                if ttft is None and new:
                    ttft = (now - t0) * 1000
                    new -= 1  # the first token's wait is the TTFT, not a gap
                    last = now
                if new > 0:
                    gaps.extend([(now - last) * 1000 / new] * new)
                    last = now
                n = delta.completion_tokens
            results[i] = (n, ttft if ttft is not None else float("nan"), gaps)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            results[i] = exc

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return Run(
        sum(r[0] for r in results), wall_s, [r[1] for r in results], [g for r in results for g in r[2]]
    )


def make_requests(engine: LLMEngine, n: int, visual_tokens: int, max_tokens: int) -> list[Request]:
    """``n`` chats of the same shape, each with its own image rows (K, D)."""
    message = ChatMessage("user", (ImagePart(b"image"), TextPart(QUESTION)))
    prompt = engine.prompt_builder.build([message], [visual_tokens])
    width = engine.embed_tokens.weight.shape[1]
    generator = torch.Generator().manual_seed(0)
    params = SamplingParams(max_tokens=max_tokens)
    return [(prompt, [torch.randn(visual_tokens, width, generator=generator)], params) for _ in range(n)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoder_batching", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, "tiny profile, 1 round, streams 1,4, 16 tokens: a smoke run in seconds", 3)
    parser.add_argument("--streams", default=None, help="comma-separated stream counts (default 1,8,16)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="tokens per stream (default 128; quick 16)"
    )
    parser.add_argument(
        "--visual-tokens", type=int, default=None, help="visual tokens per chat (default 288; quick 16)"
    )
    parser.add_argument(
        "--budgets",
        default="128,256,none",
        help="max_tokens_per_step values compared at the largest stream count (none = unchunked)",
    )
    args = parser.parse_args(argv)
    resolve_common_arguments(args, parser, 3)
    try:
        args.streams = [int(s) for s in (args.streams or ("1,4" if args.quick else "1,8,16")).split(",")]
        args.budgets = [None if b.strip() == "none" else int(b) for b in args.budgets.split(",")]
    except ValueError as exc:
        parser.error(f"--streams and --budgets take comma-separated integers ('none' for a budget): {exc}")
    args.max_tokens = args.max_tokens or (16 if args.quick else 128)
    args.visual_tokens = args.visual_tokens or (16 if args.quick else 288)
    if min(args.streams) < 1 or args.max_tokens < 2 or args.visual_tokens < 0:
        parser.error("--streams must be >= 1, --max-tokens >= 2, --visual-tokens >= 0")
    if any(b is not None and b <= max(args.streams) for b in args.budgets):
        parser.error(f"every --budgets value must exceed the largest stream count {max(args.streams)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()
    import models
    from models.profiles import PROFILES

    profile = PROFILES[args.profile]
    if args.model and Path(args.model).is_dir():
        model_path = Path(args.model)
    else:
        model_path = profile.ensure(model_root(args))[args.model or profile.chat_model]
    log(f"loading {model_path}")
    parts = models.load_language_model(model_path)
    single = LLMEngine(parts)
    widest = max(args.streams)
    requests = make_requests(single, widest, args.visual_tokens, args.max_tokens)
    seq_len = len(requests[0][0]) + args.max_tokens
    default_budget = 256 if 256 > widest else widest * 2
    engines = {
        budget: BatchingEngine(
            parts, BatchingConfig(max_batch_size=widest, max_tokens_per_step=budget, max_seq_len=seq_len)
        )
        for budget in dict.fromkeys([default_budget, *args.budgets])
    }
    cells: dict[str, Series] = {}
    try:
        for round_ in range(args.repeats + 1):
            for n in args.streams:
                for name, generate in (
                    ("per-request", single.generate),
                    ("batched", engines[default_budget].generate),
                ):
                    run = run_streams(generate, requests[:n])
                    log(f"round {round_} {name} x{n}: {run.tok_s:.1f} tok/s")
                    if round_ > 0:
                        cells.setdefault(f"{name}/{n}", Series()).add(run)
            for budget in args.budgets:
                run = run_streams(engines[budget].generate, requests[:widest])
                log(f"round {round_} budget {budget} x{widest}: {run.tok_s:.1f} tok/s")
                if round_ > 0:
                    cells.setdefault(f"budget/{budget}", Series()).add(run)
    finally:
        for engine in engines.values():
            engine.close()
    result = {
        "benchmark": "decoder_batching",
        "profile": args.profile,
        "model": model_path.name,
        "machine": {
            **machine_summary(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "settings": {
            "repeats": args.repeats,
            "warmup_rounds": 1,
            "streams": args.streams,
            "max_tokens": args.max_tokens,
            "visual_tokens": args.visual_tokens,
            "prompt_tokens": len(requests[0][0]),
            "temperature": 0.0,
            "torch_threads": threads,
            "max_tokens_per_step": default_budget,
            "budgets": args.budgets,
            "runtime_s": round(time.perf_counter() - started, 1),
        },
        "cells": {key: series.as_dict() for key, series in cells.items()},
    }
    emit(result, render(result), args.json)
    return 0


def render(result: dict[str, Any]) -> str:
    s, cells = result["settings"], result["cells"]
    m = result["machine"]
    lines = [
        (
            f"decoder batching: profile {result['profile']} ({result['model']}), {s['prompt_tokens']} prompt "
            f"tokens ({s['visual_tokens']} visual), {s['max_tokens']} new tokens greedy, medians of "
            f"{s['repeats']} rounds"
        ),
        (
            f"machine: {m['cpu_model']}, {m['usable_cores']} cores, torch {m['torch']}, {s['torch_threads']} "
            f"threads, load {m['load_average_before']} -> {m['load_average_after']}"
        ),
        "",
    ]
    base = {name: cells[f"{name}/{s['streams'][0]}"]["tok_s"] for name in ("per-request", "batched")}
    rows = []
    for n in s["streams"]:
        old, new = cells[f"per-request/{n}"], cells[f"batched/{n}"]
        rows.append(
            [
                n,
                old["tok_s"],
                new["tok_s"],
                new["tok_s"] / old["tok_s"],
                old["tok_s"] / base["per-request"],
                new["tok_s"] / base["batched"],
                old["ttft_p50_ms"],
                new["ttft_p50_ms"],
                old["itl_p50_ms"],
                new["itl_p50_ms"],
            ]
        )
    lines.append(
        markdown_table(
            [
                "streams",
                "per-request tok/s",
                "batched tok/s",
                "batched / per-request",
                "per-request vs 1 stream",
                "batched vs 1 stream",
                "TTFT p50 ms (per-request)",
                "TTFT p50 ms (batched)",
                "ITL p50 ms (per-request)",
                "ITL p50 ms (batched)",
            ],
            rows,
        )
    )
    lines += ["", f"prefill chunk budget (max_tokens_per_step) at {max(s['streams'])} streams, batched:", ""]
    rows = [
        [
            b if b is not None else "none (whole prompts)",
            c["tok_s"],
            c["ttft_p50_ms"],
            c["itl_p50_ms"],
            c["itl_p95_ms"],
            c["itl_max_ms"],
        ]
        for b in s["budgets"]
        for c in [cells[f"budget/{b}"]]
    ]
    lines.append(
        markdown_table(
            ["max_tokens_per_step", "tok/s", "TTFT p50 ms", "ITL p50 ms", "ITL p95 ms", "ITL max ms"], rows
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
