"""The server a user would otherwise write, under the load benchmark's clients:
``python -m benchmarks.load_baseline [--profile bench] [--concurrency 8] [--compare SUMMARY_CSV]``.

Plain ``transformers``: ``LlavaForConditionalGeneration.generate`` behind one lock, one request at a
time (``benchmarks.chat_paths.TransformersBaseline``), no Serve, no HTTP: closed-loop clients
(``benchmarks.load_drivers``) send the load benchmark's chat workload (the same pooled image,
question and greedy token budget, every visual token). Timed as ``benchmarks.load`` times a request:
TTFT and E2E from the moment the client sends, so the wait for the lock counts. ``--compare`` reads a
``benchmarks.load`` summary.csv (closed loop at the same concurrency) and prints the ratios.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from pathlib import Path

from benchmarks.chat_paths import QUESTION, TransformersBaseline
from benchmarks.common import configure_process, log, model_root
from benchmarks.load import _positive, table
from benchmarks.load_drivers import Level, run_level
from benchmarks.load_stats import Slo, summarize
from benchmarks.load_transports import Record
from benchmarks.load_workload import RequestSpec, WorkloadGenerator, WorkloadOptions


class LockedSender:
    """One ``generate`` at a time; a request's times start when its client sends it."""

    def __init__(self, baseline: TransformersBaseline):
        self._baseline = baseline
        self._lock = threading.Lock()

    def send(self, spec: RequestSpec, scheduled_s: float) -> Record:
        with self._lock:
            waited = time.perf_counter() - scheduled_s
            run = self._baseline.once(spec.image, spec.max_tokens)
        return Record(spec.index, spec.kind, "in-process", scheduled_s, ttft_s=waited + run.ttft_s,
                      e2e_s=waited + run.total_s, output_tokens=run.tokens, repeated=spec.repeated)


def load_baseline(profile: str, model_dir: Path, model: str | None = None) -> TransformersBaseline:
    from transformers import AutoTokenizer

    from models.profiles import resolve_chat_model

    path = resolve_chat_model(profile, model_dir, model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True, tokenize=False,
    )  # fmt: skip
    baseline = TransformersBaseline(path, prompt_text, frozenset())
    eos = baseline.model.generation_config.eos_token_id
    baseline.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    return baseline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_baseline", description=__doc__.split("\n\n")[1])
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--model", default=None, help="a Llava checkpoint of the profile (tiny: tiny-hf-llava)")
    parser.add_argument("--concurrency", type=_positive(int), default=8, help="closed-loop clients (8)")
    parser.add_argument("--requests", type=_positive(int), default=8, help="at most this many (8: one each)")
    parser.add_argument("--seconds", type=_positive(float), default=30.0, help="none starts after this (30)")
    parser.add_argument("--max-tokens", type=_positive(int), default=256)
    parser.add_argument("--threads", type=_positive(int), default=1, help="torch threads (1, as a replica)")
    parser.add_argument("--compare", type=Path, default=None, help="a benchmarks.load summary.csv")
    args = parser.parse_args(argv)
    configure_process(args.threads)
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 1.0}, repeat_fraction=1.0, pool_size=1,
                                                  max_tokens=args.max_tokens))
    log(f"loading the transformers baseline (profile {args.profile}) ...")
    baseline = load_baseline(args.profile, model_root(args), args.model)
    sender = LockedSender(baseline)
    sender.send(RequestSpec(-1, "chat", QUESTION, image=generator.pool[0], max_tokens=4), time.perf_counter())
    level = Level("closed", args.concurrency)
    log(f"{args.concurrency} clients, {args.requests} requests of {args.max_tokens} tokens ...")
    run = run_level(level, generator.take(args.requests), sender.send, max_seconds=args.seconds)
    summary = summarize(level.mode, level.value, run.records, run.duration_s, Slo())
    print(f"\ntransformers generate behind a lock, profile {args.profile}, {args.threads} thread(s), "
          f"max_tokens {args.max_tokens}, one pooled image\n")
    print(table([summary]))
    if args.compare:
        with args.compare.open() as f:
            rows = [r for r in csv.DictReader(f) if r["mode"] == "closed" and float(r["load"]) == args.concurrency]
        if rows:
            served = rows[0]
            print(f"\nTriptych ({args.compare}) vs this baseline at {args.concurrency} clients: output tokens/s "
                  f"{float(served['output_tokens_per_s']):.1f} vs {summary.output_tokens_per_s:.1f} "
                  f"({float(served['output_tokens_per_s']) / summary.output_tokens_per_s:.2f}x); p99 TTFT ms "
                  f"{float(served['ttft_p99_ms']):.0f} vs {summary.ttft_ms[99]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
