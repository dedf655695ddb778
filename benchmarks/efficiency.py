"""What each efficiency knob costs in quality and buys in speed, in one run (issue 5).

    python -m benchmarks.efficiency [--quick] [--threads N] [--json PATH]

1. Visual token pruning, speed (profile `bench`, 576 visual tokens): per pruner and keep ratio,
   the pruner's own time, LLM prefill, time to first token and prefill FLOPs; the achieved
   prefill GFLOP/s against this machine's measured float32 matmul peak.
2. Visual token pruning, quality (profile `toy`): the toy VLM's exact-match accuracy on held-out
   questions per pruner and keep ratio, as a fraction of the unpruned accuracy.
3. Denoising with DeepCache (profile `toy`): cache_interval x sampler x steps: time per image,
   relative latent error against a 200-step ddim reference, and the toy oracle's accuracy.
Medians; every ratio is measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import torch

from benchmarks.common import add_common_arguments, configure_process, emit, log, resolve_common_arguments
from benchmarks.pruning_speed import PruningSpeedBench, matmul_peak_gflops
from benchmarks.report import load_average, machine_summary, markdown_table

METHODS = ("cls_attention", "visionzip", "tome", "divprune")
QUALITY_RATIOS = (1.0, 0.5, 0.25, 0.11, 0.05)
INTERVALS = (1, 2, 3, 5)
SAMPLERS = ("ddim", "dpmpp_2m")
STEPS = (4, 8, 20)
REFERENCE_STEPS = 200
ERROR_PROBES = 8  # prompts whose latents are compared with a 200-step ddim reference (median error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.efficiency", description=__doc__.split("\n")[0])
    add_common_arguments(parser, "tiny speed model, 40 questions, 8 prompts, 1 round", 3)
    parser.add_argument("--questions", type=int, default=None, help="held-out VLM questions (default 300)")
    parser.add_argument("--prompts", type=int, default=None, help="held-out image prompts (default 60)")
    parser.add_argument("--sections", default="speed,quality,denoise",
                        help="comma-separated subset of speed, quality, denoise (default: all)")
    args = parser.parse_args(argv)
    resolve_common_arguments(args, parser, 3)
    args.questions = args.questions or (40 if args.quick else 300)
    args.prompts = args.prompts or (8 if args.quick else 60)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()
    result = {"machine": machine_summary(), "threads": threads, "args": {
        "profile": args.profile, "questions": args.questions, "prompts": args.prompts, "repeats": args.repeats}}
    sections = {"speed": pruning_speed, "quality": pruning_quality, "denoise": denoise_cache}
    for name in args.sections.split(","):
        if name not in sections:
            raise SystemExit(f"--sections: unknown section {name!r}; choose from {', '.join(sections)}")
        result[name] = sections[name](args)
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    result["load_average"] = {"before": load_before, "after": load_average()}
    emit(result, render(result), args.json)
    return 0


def pruning_speed(args) -> dict:
    from PIL import Image

    from models.profiles import resolve_chat_model
    from triptych.config import TriptychConfig

    model_dir = resolve_chat_model(args.profile, args.model_dir or TriptychConfig().model_dir,
                                   "tiny-hf-llava" if args.profile == "tiny" else None)
    log(f"pruning speed on {model_dir.name}")
    bench = PruningSpeedBench(model_dir, Image.new("RGB", (336, 336), (200, 40, 40)))
    rows = bench.measure(["none", *METHODS], repeats=args.repeats)
    peak = matmul_peak_gflops()
    return {"model": model_dir.name, "matmul_peak_gflops": peak, "rows": [
        {**row.__dict__, "gflops_per_s": row.gflops_per_s} for row in rows]}


def pruning_quality(args) -> dict:
    from benchmarks.toy_eval import VLMEvaluator
    from toy import shipped_checkpoints
    from toy.world import vqa_items

    items = vqa_items(args.questions)
    log(f"pruning quality: encoding {len(items)} held-out questions' images")
    evaluator = VLMEvaluator(shipped_checkpoints()["toy-vlm"], items)
    base = evaluator.accuracy("none")
    rows = [{"method": "none", "keep_ratio": 1.0, "accuracy": base.overall, "per_type": base.per_type,
             "relative": 1.0}]
    for method in METHODS:
        for ratio in QUALITY_RATIOS:
            log(f"pruning quality: {method} at {ratio}")
            acc = evaluator.accuracy(method, ratio)
            rows.append({"method": method, "keep_ratio": ratio, "accuracy": acc.overall, "per_type": acc.per_type,
                         "relative": acc.overall / base.overall if base.overall else float("nan")})
    return {"visual_tokens": evaluator.num_visual_tokens, "n": base.n, "rows": rows}


def denoise_cache(args) -> dict:
    from toy import shipped_checkpoints
    from toy.diffusion_eval import SamplerSetting, evaluate, load_toy_engine, sample_latents
    from toy.world import t2i_items

    engine = load_toy_engine(shipped_checkpoints()["toy-sd"], max_steps=REFERENCE_STEPS)
    items = t2i_items(args.prompts)
    probes = [item.prompt for item in items[:ERROR_PROBES]]
    log(f"denoise: {REFERENCE_STEPS}-step ddim reference for {len(probes)} prompts")
    reference = sample_latents(engine, probes, SamplerSetting("ddim", REFERENCE_STEPS))  # (P, C, h, w)
    rows = []
    steps_grid = (4, 8) if args.quick else STEPS
    for sampler in SAMPLERS:
        for steps in steps_grid:
            for interval in INTERVALS:
                if interval >= steps and interval != 1:
                    continue
                log(f"denoise: {sampler} {steps} steps, cache_interval {interval}")
                setting = SamplerSetting(sampler, steps, cache_interval=interval)
                latents = sample_latents(engine, probes, setting)  # (P, C, h, w), same seeds as the reference
                errors = torch.linalg.vector_norm((latents - reference).flatten(1), dim=1) / torch.linalg.vector_norm(
                    reference.flatten(1), dim=1)  # (P,)
                score = evaluate(engine, setting, items=items, batch=1)  # one image per request: latency
                rows.append({"sampler": sampler, "steps": steps, "cache_interval": interval,
                             "denoise_ms": round(1000 * score.seconds / score.n, 2),
                             "latent_error": float(errors.median()), "oracle_colour": score.colour,
                             "oracle_shape": score.shape, "oracle_both": score.both})
    return {"model": "toy-sd", "n": len(items), "error_probes": len(probes), "rows": rows}


def render(result: dict) -> str:
    out = io.StringIO()
    m = result["machine"]
    print("## Efficiency benchmark\n", file=out)
    print(f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['memory_gib']} GiB; torch "
          f"{m['torch']}; {result['threads']} torch threads; load average {result['load_average']['before']} "
          f"before, {result['load_average']['after']} after; runtime {result['runtime_s']} s.\n", file=out)
    if "speed" in result:
        render_speed(result["speed"], out)
    if "quality" in result:
        render_quality(result["quality"], out)
    if "denoise" in result:
        render_denoise(result["denoise"], out)
    return out.getvalue()


def render_speed(speed: dict, out) -> None:
    base = next(r for r in speed["rows"] if r["method"] == "none")
    print(f"### Visual token pruning: speed (`{speed['model']}`, in-process, features cached)\n", file=out)
    print(markdown_table(
        ["method", "keep", "visual tokens", "pruner ms", "prefill ms", "TTFT ms", "prefill GFLOP",
         "prefill speed-up", "TTFT speed-up", "GFLOP/s"],
        [[r["method"], r["keep_ratio"], r["visual_tokens"], r["prune_ms"], r["prefill_ms"], r["ttft_ms"],
          r["prefill_gflop"], f"{base['prefill_ms'] / r['prefill_ms']:.2f}x", f"{base['ttft_ms'] / r['ttft_ms']:.2f}x",
          r["gflops_per_s"]] for r in speed["rows"]]), file=out)
    print(f"\nMeasured float32 matmul peak (2048^3): {speed['matmul_peak_gflops']:.1f} GFLOP/s; unpruned "
          f"prefill reaches {base['gflops_per_s']:.1f} GFLOP/s = "
          f"{100 * base['gflops_per_s'] / speed['matmul_peak_gflops']:.0f}% of it.\n", file=out)


def render_quality(quality: dict, out) -> None:
    print(f"### Visual token pruning: quality (`toy-vlm`, {quality['n']} held-out questions, "
          f"{quality['visual_tokens']} visual tokens)\n", file=out)
    qtypes = list(quality["rows"][0]["per_type"])
    print(markdown_table(
        ["method", "keep", "accuracy", "of unpruned", *qtypes],
        [[r["method"], r["keep_ratio"], f"{100 * r['accuracy']:.1f}%", f"{100 * r['relative']:.1f}%",
          *(f"{100 * r['per_type'].get(q, float('nan')):.0f}%" for q in qtypes)] for r in quality["rows"]]), file=out)


def render_denoise(denoise: dict, out) -> None:
    print(f"\n### Denoising with DeepCache (`toy-sd`, {denoise['n']} held-out prompts, guidance 5)\n", file=out)
    firsts = {(r["sampler"], r["steps"]): r for r in denoise["rows"] if r["cache_interval"] == 1}
    print(markdown_table(
        ["sampler", "steps", "cache_interval", "ms / image", "speed-up", "latent error vs ddim 200 (median)",
         "oracle colour", "oracle shape", "oracle both"],
        [[r["sampler"], r["steps"], r["cache_interval"], r["denoise_ms"],
          f"{firsts[(r['sampler'], r['steps'])]['denoise_ms'] / r['denoise_ms']:.2f}x",
          f"{100 * r['latent_error']:.2f}%", f"{100 * r['oracle_colour']:.0f}%", f"{100 * r['oracle_shape']:.0f}%",
          f"{100 * r['oracle_both']:.0f}%"] for r in denoise["rows"]]), file=out)


if __name__ == "__main__":
    sys.exit(main())
