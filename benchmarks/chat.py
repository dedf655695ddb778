"""Image-text chat benchmark: ``python -m benchmarks.chat [--quick] [--repeats N] [--json PATH]``.

One run, one machine, the ``bench`` profile (576 visual tokens per image; ``--quick``: ``tiny``).
The request is one user turn, an image plus "Describe the picture.", greedy, ``max_tokens`` fixed
(the bench checkpoint never emits EOS, so every path generates the same number of tokens). Every
path runs the same visual tokens: ``--pruning`` (default ``none``: all of them, like the
``transformers`` baseline) at ``--keep-ratio``; the Serve requests send both explicitly, so the
server's default pruning never leaks into a comparison, and each path's reported
``visual_tokens_kept`` is checked (a mismatch becomes a note). With pruning on, the baseline (which
cannot prune) is left out and the engine path gets the pruned features. After
one warm-up round, each round runs every path once, so a noisy shared machine slows all paths
alike; tables quote medians over the rounds.

Paths (each one request at a time, same prompt ids, same threads per engine):

- ``serve_miss`` / ``serve_hit``: through Ray Serve with the gRPC client (``deployments.server.serving``,
  embedded Redis); a fresh image per miss round, one already-cached image for hits.
- ``local_miss`` / ``local_hit``: the same ``ChatPipeline`` in this process over the engines
  (``pipelines.local_stages``, ``pipelines.chat_decoder``), the same Redis, with the ingress's request
  validation; the decoder side reads cached features by key and prunes, as the replica does: everything
  Serve runs, minus Serve (proxy, gRPC, handles, replica hops, serialisation).
- ``engine``: ``LLMEngine.generate`` alone, the image's (pruned) features already in hand (no cache,
  no pipeline).
- ``transformers``: what a user would otherwise write: ``LlavaProcessor`` on the decoded image, then
  ``LlavaForConditionalGeneration.generate`` with a streamer (no cache: every request encodes).

Definitions (caller's wall clock): TTFT = request start -> first non-empty text chunk; total =
request start -> end of stream; decode tok/s = (completion tokens - 1) / (total - TTFT).
Serve overhead = Serve path minus the matching in-process pipeline path (hit with hit, miss with
miss). On a shared, busy machine the stage compute itself (prefill, decode, in another process)
varies a lot between paths, so the overhead is also given *outside stage compute*: each path's
TTFT / total minus the stage timings it reports (``timings_ms``), Serve minus in-process. For a hit
that is exactly the proxy + gRPC + ingress + decoder-handle + streaming cost; for a miss the
encoder round trip (handle, ``@serve.batch`` wait) is inside the reported ``encode`` stage.
Encoder throughput = images/s of ``VisionEncoderEngine.encode`` on 8 decoded images, one call per
image (batch 1) vs one call for all 8 (batch 8), in-process. Each round runs the paths in a
rotated order, so no path always follows the encoder section or another path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chat_paths import (
    QUESTION,
    Run,
    TransformersBaseline,
    Workload,
    chat_request,
    encoder_rate,
    engine_once,
    photo_bytes,
    pipeline_once,
    serve_once,
)
from benchmarks.common import (
    add_common_arguments,
    configure_process,
    emit,
    log,
    model_root,
    resolve_common_arguments,
)
from benchmarks.report import Samples, load_average, machine_summary, markdown_table
from triptych.ports import free_port

ENCODER_IMAGES = 8
PATHS = {
    "serve_miss": "Serve gRPC, cache miss",
    "serve_hit": "Serve gRPC, cache hit",
    "local_miss": "in-process ChatPipeline, cache miss",
    "local_hit": "in-process ChatPipeline, cache hit",
    "engine": "in-process LLMEngine, features given",
    "transformers": "transformers Llava generate (baseline)",
}


@dataclass
class PathStats:
    ttft_ms: Samples = field(default_factory=Samples)
    total_ms: Samples = field(default_factory=Samples)
    decode_tok_s: Samples = field(default_factory=Samples)
    tokens: list[int] = field(default_factory=list)
    stages_ms: dict[str, Samples] = field(default_factory=dict)
    outside_ttft_ms: Samples = field(default_factory=Samples)
    outside_total_ms: Samples = field(default_factory=Samples)

    def add(self, run: Run) -> None:
        self.ttft_ms.add(run.ttft_s * 1000)
        self.total_ms.add(run.total_s * 1000)
        self.decode_tok_s.add(run.decode_tok_s)
        self.tokens.append(run.tokens)
        for stage, ms in run.stages_ms.items():
            self.stages_ms.setdefault(stage, Samples()).add(ms)
        if (outside := run.outside_stages_ms) is not None:
            self.outside_ttft_ms.add(outside[0])
            self.outside_total_ms.add(outside[1])

    def as_dict(self) -> dict[str, Any]:
        return {
            "ttft_ms": self.ttft_ms.median,
            "total_ms": self.total_ms.median,
            "decode_tok_s": self.decode_tok_s.median,
            "tokens": self.tokens,
            "stages_ms": {k: v.median for k, v in sorted(self.stages_ms.items())},
            "outside_stages_ttft_ms": self.outside_ttft_ms.median if self.outside_ttft_ms.values else None,
            "outside_stages_total_ms": self.outside_total_ms.median if self.outside_total_ms.values else None,
            "samples": {"ttft_ms": self.ttft_ms.values, "total_ms": self.total_ms.values},
        }


# ---- the run ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat", description=__doc__.split("\n")[0])
    add_common_arguments(parser, "tiny profile (tiny-hf-llava), 1 round, max_tokens 8: a smoke run in seconds", 5)
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="tokens per request (default 32; quick 8)"
    )
    parser.add_argument("--pruning", default="none",
                        help="pruning_method on every path (default none: all visual tokens, like transformers)")
    parser.add_argument("--keep-ratio", type=float, default=1.0,
                        help="visual_token_keep_ratio on every path (default 1.0)")
    args = parser.parse_args(argv)
    resolve_common_arguments(args, parser, 5)
    args.max_tokens = args.max_tokens or (8 if args.quick else 32)
    if args.model is None and args.profile == "tiny":
        args.model = "tiny-hf-llava"  # the transformers baseline needs a Llava checkpoint
    if args.max_tokens < 2:
        parser.error("--max-tokens must be >= 2")
    if not 0.0 < args.keep_ratio <= 1.0:
        parser.error("--keep-ratio must be in (0, 1]")
    from encoders.pruning import PRUNERS

    if args.pruning not in PRUNERS:
        parser.error(f"--pruning must be one of {', '.join(sorted(PRUNERS))}")
    args.workload = Workload(args.max_tokens, args.pruning, args.keep_ratio)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()

    model_dir = model_root(args)
    bench = ChatBench(args, model_dir)
    bench.load()
    if args.no_serve:
        from cache import EmbeddedRedis

        with EmbeddedRedis() as redis:
            bench.measure(redis.url, serve_client=None)
    else:
        bench.measure_with_serve()
    runtime_s = time.perf_counter() - started
    result = bench.result(threads, runtime_s, load_before, load_average())
    emit(result, render(result), args.json)
    return 0


class ChatBench:
    """Loads the engines and the baseline once, then runs the rounds (with or without Serve)."""

    def __init__(self, args: argparse.Namespace, model_dir: Path):
        self.args = args
        self.model_dir = model_dir
        self.paths: dict[str, PathStats] = {}
        self.encoder: dict[int, Samples] = {1: Samples(), ENCODER_IMAGES: Samples()}
        self.notes: list[str] = []
        self.serve_threads: str | None = None

    def load(self) -> None:
        import models
        from decoders.engine import LLMEngine
        from encoders.engine import VisionEncoderEngine
        from encoders.image_io import load_image
        from encoders.pruning import get_pruner, keep_count
        from models.profiles import resolve_chat_model
        from triptych.config import Limits
        from triptych.types import SamplingParams

        args = self.args
        log(f"model {args.model or '(profile default)'} of profile {args.profile} under {self.model_dir}")
        self.model_path = resolve_chat_model(args.profile, self.model_dir, args.model)
        self.source = models.detect_source(self.model_path)
        self.limits = Limits()
        log("loading the in-process engines")
        self.vision = VisionEncoderEngine(models.load_vision_tower(self.model_path))
        self.llm = LLMEngine(models.load_language_model(self.model_path))
        workload = args.workload
        self.params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
        self.hit_image = photo_bytes(0)
        request = chat_request(self.hit_image, workload)
        tokens_in = self.vision.num_visual_tokens
        self.visual_kept = tokens_in if workload.pruning_method == "none" else keep_count(tokens_in, workload.keep_ratio)
        self.prompt_ids = self.llm.prompt_builder.build(request.messages, [self.visual_kept])
        pil = load_image(self.hit_image, "image", self.limits.max_image_pixels, self.limits.max_image_bytes)
        features = self.vision.encode([pil])[0]
        self.hit_tokens = get_pruner(workload.pruning_method)(features, self.visual_kept).tokens  # (K, D)
        self.encoder_images = [
            load_image(
                photo_bytes(3000 + j), "image", self.limits.max_image_pixels, self.limits.max_image_bytes
            )
            for j in range(ENCODER_IMAGES)
        ]
        self.baseline = None
        if workload.pruning_method != "none":
            self.notes.append(f"no transformers baseline: it cannot prune ({workload.describe()})")
        elif self.source == "hf_llava":
            log("loading the transformers baseline")
            prompt_text = self.llm.tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
                add_generation_prompt=True, tokenize=False,
            )  # fmt: skip
            self.baseline = TransformersBaseline(self.model_path, prompt_text, self.llm.eos_token_ids)
            same = self.baseline.prompt_ids(self.hit_image) == self.prompt_ids
            self.notes.append(
                f"transformers baseline prompt ids identical to Triptych's: {'yes' if same else 'NO'}"
            )
        else:
            self.notes.append(f"no transformers baseline: source {self.source} is not a Llava checkpoint")

    def measure_with_serve(self) -> None:
        from deployments.server import serving
        from launcher.client import TriptychClient
        from triptych.config import DeploymentOptions, TriptychConfig

        config = TriptychConfig(
            profile=self.args.profile,
            model_dir=self.model_dir,
            chat_model=self.args.model,
            http_port=free_port(),
            grpc_port=free_port(),
            vision_encoder=DeploymentOptions(num_cpus=0.25),  # one replica each: nothing autoscales mid-run
            llm_decoder=DeploymentOptions(num_cpus=0.25, max_ongoing_requests=4),
        )
        log("starting Serve (embedded Redis, local Ray)")
        with serving(config, quiet=True) as server:
            self.serve_threads = _replica_thread_env()
            with TriptychClient(server.grpc_target, timeout_s=600.0) as client:
                self.measure(server.redis_url, client)

    def measure(self, redis_url: str | None, serve_client) -> None:
        from cache import EmbeddingCache
        from pipelines.chat import ChatPipeline
        from pipelines.chat_decoder import ChatDecoder
        from pipelines.local_stages import LocalVisionStage

        cache = EmbeddingCache(redis_url)  # the ingress's and the decoder's (one process: one cache)
        pipeline = ChatPipeline(LocalVisionStage(self.vision, self.limits), ChatDecoder(self.llm, cache),
                                cache, self.llm.prompt_builder)  # fmt: skip
        workload = self.args.workload
        hit_request = chat_request(self.hit_image, workload)
        with asyncio.Runner() as runner:  # one loop for every in-process request, like a replica
            steps: dict[str, Callable[[int], Run]] = {}
            if serve_client is not None:
                steps["serve_miss"] = lambda i: serve_once(serve_client, photo_bytes(1000 + i), workload)
                steps["serve_hit"] = lambda i: serve_once(serve_client, self.hit_image, workload)
            steps["local_miss"] = lambda i: runner.run(
                pipeline_once(pipeline, chat_request(photo_bytes(2000 + i), workload), self.limits)
            )
            steps["local_hit"] = lambda i: runner.run(pipeline_once(pipeline, hit_request, self.limits))
            steps["engine"] = lambda i: engine_once(self.llm, self.prompt_ids, self.hit_tokens, self.params)
            if self.baseline is not None:
                steps["transformers"] = lambda i: self.baseline.once(photo_bytes(4000 + i), workload.max_tokens)
            self.paths = {name: PathStats() for name in steps}

            rounds = self.args.repeats + 1  # round 0 warms up (and fills the cache for the hit image)
            for round_ in range(rounds):
                log(f"round {round_}/{rounds - 1}" + (" (warm-up, not counted)" if round_ == 0 else ""))
                names = list(steps)
                names = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate: no fixed order
                for name in names:
                    run = steps[name](round_)
                    expected_hit = name.endswith("_hit") if name.startswith(("serve", "local")) else None
                    if expected_hit is not None and run.cache_hit != expected_hit and round_ > 0:
                        self.notes.append(f"{name} round {round_}: cache_hit={run.cache_hit}")
                    if run.visual_tokens_kept != self.visual_kept:
                        self.notes.append(f"{name} round {round_}: ran {run.visual_tokens_kept} visual tokens, "
                                          f"not the workload's {self.visual_kept}")
                    if round_ > 0:
                        self.paths[name].add(run)
                for batch in self.encoder:
                    rate = encoder_rate(self.vision, self.encoder_images, batch)
                    if round_ > 0:
                        self.encoder[batch].add(rate)
            runner.run(cache.close())

    def result(self, threads: int, runtime_s: float, load_before: str, load_after: str) -> dict[str, Any]:
        paths = {name: {"label": PATHS[name], **stats.as_dict()} for name, stats in self.paths.items()}
        tokens = {t for stats in self.paths.values() for t in stats.tokens}
        if len(tokens) > 1:
            self.notes.append(f"completion token counts differ across paths: {sorted(tokens)}")
        encoder = {f"batch_{b}_images_per_s": s.median for b, s in self.encoder.items()}
        return {
            "benchmark": "chat",
            "profile": self.args.profile,
            "model": self.model_path.name,
            "source": self.source,
            "machine": {
                **machine_summary(),
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "settings": {
                "repeats": self.args.repeats,
                "warmup_rounds": 1,
                "max_tokens": self.args.max_tokens,
                "temperature": 0.0,
                "threads_per_engine": threads,
                "serve_replica_omp_threads": self.serve_threads,
                "prompt_tokens": len(self.prompt_ids),
                "visual_tokens": self.vision.num_visual_tokens,
                "pruning_method": self.args.workload.pruning_method,
                "visual_token_keep_ratio": self.args.workload.keep_ratio,
                "visual_tokens_kept": self.visual_kept,
                "workload": self.args.workload.describe(),
                "question": QUESTION,
            },
            "paths": paths,
            "encoder": encoder,
            "comparisons": comparisons(paths, encoder),
            "notes": self.notes,
            "runtime_s": round(runtime_s, 1),
        }


def _replica_thread_env() -> str | None:
    """OMP_NUM_THREADS as a fractional-CPU Ray worker sees it (what Serve replicas get)."""
    import ray

    @ray.remote(num_cpus=0.01)
    def omp_threads() -> str | None:
        return os.environ.get("OMP_NUM_THREADS")

    return ray.get(omp_threads.remote())


# ---- comparisons and the table ------------------------------------------------------------------


def comparisons(paths: dict[str, dict], encoder: dict[str, float]) -> list[dict[str, Any]]:
    """The claims, each a ratio or difference of medians measured in this run."""
    out: list[dict[str, Any]] = []

    def has(*names: str) -> bool:
        return all(n in paths for n in names)

    def speedup(claim: str, slow: str, fast: str, metric: str = "ttft_ms") -> None:
        a, b = paths[slow][metric], paths[fast][metric]
        out.append({"claim": claim, "value": f"{a / b:.2f}x", "ratio": a / b,
                    "detail": f"{_ms(a)} vs {_ms(b)}"})  # fmt: skip

    def overhead(claim: str, served: str, local: str, metric: str) -> None:
        a, b = paths[served][metric], paths[local][metric]
        out.append({"claim": claim, "value": f"{a - b:+,.0f} ms ({(a - b) / b:+.1%})", "ratio": a / b,
                    "detail": f"Serve {_ms(a)} vs in-process {_ms(b)}"})  # fmt: skip

    for where, miss, hit in (("Serve", "serve_miss", "serve_hit"), ("in-process", "local_miss", "local_hit")):
        if has(miss, hit):
            speedup(f"cache hit vs miss, TTFT speed-up ({where})", miss, hit)
            a, b = paths[hit]["decode_tok_s"], paths[miss]["decode_tok_s"]
            out.append({"claim": f"cache hit vs miss, decode tok/s ratio ({where})", "value": f"{a / b:.2f}x",
                        "ratio": a / b, "detail": f"{a:.1f} vs {b:.1f} tok/s"})  # fmt: skip
    one, many = encoder.get("batch_1_images_per_s"), encoder.get(f"batch_{ENCODER_IMAGES}_images_per_s")
    if one and many:
        out.append({"claim": f"encoder batch {ENCODER_IMAGES} vs batch 1, images/s", "value": f"{many / one:.2f}x",
                    "ratio": many / one, "detail": f"{many:.2f} vs {one:.2f} images/s"})  # fmt: skip
    for kind in ("hit", "miss"):
        if has(f"serve_{kind}", f"local_{kind}"):
            overhead(f"Serve overhead, cache {kind}: TTFT", f"serve_{kind}", f"local_{kind}", "ttft_ms")
            overhead(f"Serve overhead, cache {kind}: total", f"serve_{kind}", f"local_{kind}", "total_ms")
    for kind in ("hit", "miss"):
        if has(f"serve_{kind}", f"local_{kind}"):
            for part in ("ttft", "total"):
                a = paths[f"serve_{kind}"][f"outside_stages_{part}_ms"]
                b = paths[f"local_{kind}"][f"outside_stages_{part}_ms"]
                out.append({"claim": f"Serve overhead outside stage compute, cache {kind}: "
                                     f"{'TTFT' if part == 'ttft' else 'total'}",
                            "value": f"{a - b:+,.0f} ms", "ratio": None,
                            "detail": f"Serve {_ms(a)} vs in-process {_ms(b)}"})  # fmt: skip
    for ours in ("serve_miss", "serve_hit") if has("serve_miss") else ("local_miss", "local_hit"):
        if has(ours, "transformers"):
            label = f"{'Serve' if ours.startswith('serve') else 'in-process'} {ours.split('_')[1]}"
            speedup(f"Triptych ({label}) vs transformers, TTFT speed-up", "transformers", ours)
            speedup(f"Triptych ({label}) vs transformers, total speed-up", "transformers", ours, "total_ms")
    return out


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        f"## Chat benchmark: profile `{result['profile']}` (model `{result['model']}`, source {result['source']})",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB RAM; torch {m['torch']}, transformers {m['transformers']}"
        + (f", ray {m['ray']}" if "ray" in m else "")
        + f"; load average {m['load_average_before']} "
        f"before, {m['load_average_after']} after.",
        f'Request: 1 image + "{s["question"]}" = {s["prompt_tokens"]} prompt tokens '
        f"({s['visual_tokens_kept']} of {s['visual_tokens']} visual tokens: {s['workload']}, the same on every path), "
        f"greedy, max_tokens {s['max_tokens']}; {s['threads_per_engine']} torch "
        f"threads per engine"
        + (
            f" (Serve replicas: OMP_NUM_THREADS={s['serve_replica_omp_threads']})"
            if s["serve_replica_omp_threads"]
            else ""
        )
        + f". Medians of {s['repeats']} round(s) after {s['warmup_rounds']} warm-up round.",
        "",
    ]
    rows = []
    for stats in result["paths"].values():
        stages = ", ".join(f"{k} {v:,.0f}" for k, v in stats["stages_ms"].items() if v >= 0.5)
        rows.append([stats["label"], stats["ttft_ms"], stats["total_ms"], stats["decode_tok_s"],
                     "/".join(str(t) for t in sorted(set(stats["tokens"]))), stats["outside_stages_ttft_ms"],
                     stats["outside_stages_total_ms"], stages or "-"])  # fmt: skip
    lines.append(
        markdown_table(
            [
                "path",
                "TTFT ms",
                "total ms",
                "decode tok/s",
                "tokens",
                "outside stages: TTFT ms",
                "total ms",
                "reported timings_ms (median)",
            ],
            rows,
        )
    )
    lines.append("")
    enc = result["encoder"]
    lines.append(markdown_table(
        ["encoder (VisionEncoderEngine, in-process)", "images/s"],
        [[f"batch {b.split('_')[1]}", v] for b, v in enc.items()],
    ))  # fmt: skip
    lines.append("")
    lines.append(
        markdown_table(
            ["comparison (medians, same run)", "value", "from"],
            [[c["claim"], c["value"], c["detail"]] for c in result["comparisons"]],
        )
    )
    lines.append("")
    for note in result["notes"]:
        lines.append(f"Note: {note}")
    lines.append(f"Total benchmark runtime: {result['runtime_s']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
