"""Quality of the toy models on held-out data, graded exactly by the toy world's oracle (issue 4).

    python -m benchmarks.quality [--quick] [--questions 500] [--prompts 200] [--json PATH]

- toy VLM: exact-match accuracy per question type, through the served chat path in-process (the
  real loaders, the vision engine, the prompt builder and the LLM engine; greedy, all visual tokens);
- toy text-to-image: oracle accuracy (colour right, shape right, both) and the CLIP score of the
  generated images under the toy CLIP, at 50-step DDIM and at the server default (dpmpp_2m, 8);
- toy CLIP: zero-shot accuracy picking the right caption among one-attribute-changed alternatives,
  and 30-way colour x shape classification of single objects.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from benchmarks.common import configure_process, emit, log
from benchmarks.report import load_average, machine_summary, markdown_table

IMAGE_SETTINGS = (("ddim", 50), ("dpmpp_2m", 8))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 questions, 10 prompts: a smoke run")
    parser.add_argument("--questions", type=int, default=None, help="held-out VLM questions (default 500)")
    parser.add_argument("--prompts", type=int, default=None, help="held-out image prompts (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.questions = args.questions or (40 if args.quick else 500)
    args.prompts = args.prompts or (10 if args.quick else 200)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()
    from benchmarks.toy_eval import VLMEvaluator
    from toy import shipped_checkpoints
    from toy.clip import load_clip, zero_shot_captions, zero_shot_single
    from toy.world import vqa_items

    checkpoints = shipped_checkpoints()
    log(f"toy VLM on {args.questions} held-out questions")
    vlm = VLMEvaluator(checkpoints["toy-vlm"], vqa_items(args.questions)).accuracy("none")
    clip = load_clip(checkpoints["toy-clip"])
    log("toy CLIP zero-shot")
    clip_result = {"captions": zero_shot_captions(clip, n=min(200, args.questions)),
                   **{f"single_{k}": v for k, v in zero_shot_single(clip, n=min(300, args.questions)).items()}}
    images = [image_quality(checkpoints["toy-sd"], clip, sampler, steps, args.prompts)
              for sampler, steps in IMAGE_SETTINGS]
    result = {"machine": machine_summary(), "threads": threads, "vlm": vlm.__dict__, "clip": clip_result,
              "images": images, "runtime_s": round(time.perf_counter() - started, 1),
              "load_average": {"before": load_before, "after": load_average()}}
    emit(result, render(result), args.json)
    return 0


def image_quality(model_dir, clip, sampler: str, steps: int, n: int) -> dict:
    from toy.diffusion_eval import SamplerSetting, generate, load_toy_engine
    from toy.oracle import grade_image
    from toy.world import t2i_items

    log(f"toy text-to-image: {sampler} {steps} steps on {n} prompts")
    items = t2i_items(n)
    engine = load_toy_engine(model_dir)
    setting = SamplerSetting(sampler, steps)
    images = generate(engine, [item.prompt for item in items], setting)
    grades = [grade_image(image, item) for image, item in zip(images, items)]
    clip_scores = clip.clip_score(images, [item.prompt for item in items])  # (n,)
    return {"sampler": sampler, "steps": steps, "guidance_scale": setting.guidance_scale, "n": n,
            "colour": sum(g.colour_ok for g in grades) / n, "shape": sum(g.shape_ok for g in grades) / n,
            "both": sum(g.both for g in grades) / n, "clip_score": float(clip_scores.mean())}


def render(result: dict) -> str:
    out = io.StringIO()
    m = result["machine"]
    print("## Toy-world quality benchmark\n", file=out)
    print(f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores; torch {m['torch']}; "
          f"{result['threads']} threads; runtime {result['runtime_s']} s.\n", file=out)
    vlm = result["vlm"]
    print(f"### Toy VLM ({vlm['n']} held-out questions, all visual tokens, greedy)\n", file=out)
    print(markdown_table(["question type", "exact match"],
                         [[q, f"{100 * a:.1f}%"] for q, a in vlm["per_type"].items()]
                         + [["all", f"{100 * vlm['overall']:.1f}%"]]), file=out)
    print("\n### Toy text-to-image (oracle on held-out single-object prompts)\n", file=out)
    print(markdown_table(["sampler", "steps", "guidance", "prompts", "colour", "shape", "both", "CLIP score"],
                         [[r["sampler"], r["steps"], r["guidance_scale"], r["n"], f"{100 * r['colour']:.1f}%",
                           f"{100 * r['shape']:.1f}%", f"{100 * r['both']:.1f}%", f"{r['clip_score']:.1f}"]
                          for r in result["images"]]), file=out)
    c = result["clip"]
    print("\n### Toy CLIP (zero-shot, held out)\n", file=out)
    print(markdown_table(["task", "accuracy"], [
        ["true caption vs one-attribute-changed alternatives", f"{100 * c['captions']:.1f}%"],
        ["single object, 30-way colour x shape", f"{100 * c['single_both']:.1f}%"],
        ["single object, colour", f"{100 * c['single_colour']:.1f}%"],
        ["single object, shape", f"{100 * c['single_shape']:.1f}%"]]), file=out)
    return out.getvalue()


if __name__ == "__main__":
    sys.exit(main())
