"""Disaggregation benchmark: ``python -m benchmarks.disaggregation [--profile toy] [--rates 4,8,12] ...``.

The same mixed load, chat streams while text-to-image requests run beside them, from the load
generator (open-loop Poisson arrivals, ``benchmarks.load_drivers``; the ``openai`` client over HTTP,
``benchmarks.load_transports``) against two servers in turn, each started here on a local Ray and
stopped before the next; each server gets every ``--rates`` level in turn:

- ``separate``: Triptych, each stage its own deployment (``deployments.app.build_app``);
- ``monolith``: one deployment type whose replicas each hold every model and run each request start to
  finish (``benchmarks.monolith``), behind the same OpenAI HTTP API.

Both get the same total CPU: the ``num_cpus`` of the replicas doing the work sum to ``--cpus``
(Triptych's split over its stages by ``STAGE_SHARES``; the monolith's over ``--monolith-replicas``
equal replicas), plus 0.01 for each deployment the load never calls (the embedded Redis in both, and
Triptych's embedder). Ray's ``num_cpus`` is a scheduling quantity, not a limit: on one machine both
designs run on the same cores, with ``--threads`` torch threads per replica. Replica counts are fixed
(nothing autoscales mid-run, so the budgets stay equal) and sampled from ``serve.status()`` all along. Each round runs both (the order alternates
between rounds); each server is warmed up first (every pooled image once, one image request). Records
of all rounds are pooled per design and rate.

It prints a table per rate and design (chat TTFT p50/p99, and p99 over the chats that started while an
image request was in flight; images per minute; goodput under the SLO ``--slo-*``; errors) and the
ratios separate / monolith per rate, and writes
``summary.csv``, ``requests.csv``, ``replicas.csv`` and ``disaggregation.png`` under ``--out``
(``benchmarks/results/disaggregation-PROFILE``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import configure_process, log, model_root
from benchmarks.load import _fraction, _number_list, _positive, write_csv
from benchmarks.load_drivers import Level, LevelRun
from benchmarks.load_replicas import ReplicaSample
from benchmarks.load_stats import LevelSummary, Slo, percentile, summarize
from benchmarks.load_transports import Record
from benchmarks.load_workload import WorkloadOptions, parse_mix
from benchmarks.report import machine_summary, markdown_table

DESIGNS = ("separate", "monolith")
# Triptych's split of the CPU budget over its stages (fractions of --cpus; they sum to 1).
STAGE_SHARES = {"ingress": 0.1, "vision_encoder": 0.1, "llm_decoder": 0.35, "text_encoder": 0.05, "denoiser": 0.4}
REPLICA_INTERVAL_S = 0.5  # how often serve.status() is sampled
IDLE_CPUS = 0.01  # each deployment this load never calls (the embedder) and the embedded Redis (both designs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disaggregation", description=__doc__.split("\n\n")[1])
    load = parser.add_argument_group("load (the same for both designs)")
    load.add_argument("--rates", type=_number_list(float, "> 0", lambda v: v > 0), default=[4.0, 8.0, 12.0],
                      help="Poisson arrival rates, requests/s, one level each (4,8,12)")
    load.add_argument("--requests", type=_positive(int), default=100, help="per level, design and round (100)")
    load.add_argument("--seconds", type=_positive(float), default=25.0,
                      help="no request starts later than this into a level (25)")
    load.add_argument("--rounds", type=_positive(int), default=2, help="rounds of both designs (2)")
    load.add_argument("--mix", type=_chat_and_image_mix, default="chat=0.75,image=0.25",
                      help="kind=weight,... of chat and image")
    load.add_argument("--repeat-fraction", type=_fraction, default=0.5, help="chats reusing a pooled image (0.5)")
    load.add_argument("--pool-size", type=_positive(int), default=4, help="distinct pooled images (4)")
    load.add_argument("--max-tokens", type=_positive(int), default=32, help="chat tokens per request (32)")
    load.add_argument("--image-steps", type=_positive(int), default=16, help="text-to-image steps (16)")
    load.add_argument("--image-size", type=_positive(int), default=128, help="text-to-image width=height (128)")
    load.add_argument("--timeout-s", type=_positive(float), default=120.0, help="per request (120)")
    load.add_argument("--seed", type=int, default=0, help="arrivals, kinds and pooled images (0)")
    slo = parser.add_argument_group("SLO (goodput counts requests within all of these)")
    slo.add_argument("--slo-ttft-ms", type=_positive(float), default=500.0, help="chat time to first token (500)")
    slo.add_argument("--slo-tpot-ms", type=_positive(float), default=100.0,
                     help="chat time per output token after the first (100)")
    slo.add_argument("--slo-image-ms", type=_positive(float), default=5000.0, help="text-to-image end-to-end (5000)")
    server = parser.add_argument_group("the servers started here")
    server.add_argument("--profile", default="toy", help="model profile (toy; tiny for a quick run)")
    server.add_argument("--model-dir", type=Path, default=None, help="model root (TRIPTYCH_MODEL_DIR)")
    server.add_argument("--cpus", type=_positive(float), default=1.9,
                        help="num_cpus of each design's working replicas in total (1.9: with the idle ones, "
                             "within a 2-core machine's 2)")
    server.add_argument("--monolith-replicas", type=_positive(int), default=2, help="monolith replicas (2)")
    server.add_argument("--threads", type=_positive(int), default=1, help="torch threads per replica (1)")
    parser.add_argument("--out", type=Path, default=None, help="results (benchmarks/results/disaggregation-PROFILE)")
    return parser


def _chat_and_image_mix(text: str) -> dict[str, float]:
    try:
        mix = parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if set(mix) != {"chat", "image"}:
        raise argparse.ArgumentTypeError(f"needs both chat and image (chats beside images), got {text!r}")
    return mix


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; every refusal is an argparse error naming its flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cpus < len(STAGE_SHARES) * 0.05:
        parser.error(f"--cpus: at least {len(STAGE_SHARES) * 0.05:g} (each stage needs a share), got {args.cpus:g}")
    offered = os.cpu_count() or 1  # what the local Ray node offers
    if args.cpus + 2 * IDLE_CPUS > offered:
        parser.error(f"--cpus: {args.cpus:g} plus {2 * IDLE_CPUS:g} for the idle deployments exceeds the "
                     f"{offered} CPUs the local Ray node offers")
    args.slo = Slo(args.slo_ttft_ms / 1000, args.slo_tpot_ms / 1000, args.slo_image_ms / 1000)
    args.out = args.out or Path("benchmarks/results") / f"disaggregation-{args.profile}"
    return args


# ---- the two designs ------------------------------------------------------------------------------


def separate_config(args: argparse.Namespace):
    """Triptych with its stages' CPU shares summing to ``args.cpus``, one replica each."""
    from triptych.config import DeploymentOptions, TriptychConfig
    from triptych.ports import free_port

    def stage(name: str, **options) -> DeploymentOptions:
        return DeploymentOptions(num_cpus=round(STAGE_SHARES[name] * args.cpus, 3), **options)

    return TriptychConfig(
        profile=args.profile, model_dir=model_root(args), http_port=free_port(), grpc_port=free_port(),
        ingress=stage("ingress", max_ongoing_requests=64, max_queued_requests=128),
        vision_encoder=stage("vision_encoder"), llm_decoder=stage("llm_decoder", max_ongoing_requests=24),
        text_encoder=stage("text_encoder"), denoiser=stage("denoiser", max_ongoing_requests=16),
        embedder=DeploymentOptions(num_cpus=IDLE_CPUS),
    )


def monolith_config(args: argparse.Namespace):
    """The monolith's replicas (its ``ingress`` block): ``--monolith-replicas`` sharing ``args.cpus``."""
    from triptych.config import DeploymentOptions

    replicas = args.monolith_replicas
    ingress = DeploymentOptions(num_cpus=round(args.cpus / replicas, 3), min_replicas=replicas,
                                max_replicas=replicas, max_ongoing_requests=48, max_queued_requests=128)
    return separate_config(args).model_copy(update={"ingress": ingress})


def design_config(design: str, args: argparse.Namespace):
    return monolith_config(args) if design == "monolith" else separate_config(args)


def cpu_budget(design: str, config) -> dict[str, float]:
    """{deployment: num_cpus x replicas} of the deployments that do this load's work (the idle ones, the
    embedded Redis and the embedder, take ``IDLE_CPUS`` each in both designs)."""
    if design == "monolith":
        return {"Monolith": config.ingress.num_cpus * config.ingress.min_replicas}
    names = {"ingress": "TriptychIngress", "vision_encoder": "VisionEncoder", "llm_decoder": "LLMDecoder",
             "text_encoder": "TextEncoder", "denoiser": "Denoiser"}
    return {deployment: getattr(config, key).num_cpus * getattr(config, key).min_replicas
            for key, deployment in names.items()}


def _serving(design: str, config):
    from deployments.serve_config import serve_config_for
    from deployments.server import serving

    if design == "separate":
        return serving(config, quiet=True)
    from ray.serve.schema import ServeDeploySchema

    from benchmarks.monolith import APP_NAME

    raw = serve_config_for(config).model_dump(mode="json", exclude_unset=True)
    raw["applications"][0].update(name=APP_NAME, import_path="benchmarks.monolith:app_builder")
    return serving(serve_config=ServeDeploySchema.model_validate(raw), app_configs={APP_NAME: config}, quiet=True)


@dataclass
class DesignResult:
    """One design's level runs and replica samples over all rounds."""

    design: str
    cpus: dict[str, float]
    runs: list[LevelRun] = field(default_factory=list)  # every level of every round, in order
    samples: list[list[ReplicaSample]] = field(default_factory=list)  # one list per round


def run_design(design: str, args: argparse.Namespace, result: DesignResult) -> None:
    """Start the design's server, warm it up, send every level, sample replicas; stop the server."""
    from benchmarks.load import _warm_up
    from benchmarks.load_drivers import run_level
    from benchmarks.load_replicas import ReplicaSampler
    from benchmarks.load_transports import HttpSender
    from benchmarks.load_workload import WorkloadGenerator

    config = design_config(design, args)
    options = WorkloadOptions(mix=args.mix, repeat_fraction=args.repeat_fraction, pool_size=args.pool_size,
                              max_tokens=args.max_tokens, image_steps=args.image_steps,
                              image_size=args.image_size, seed=args.seed)
    generator = WorkloadGenerator(options)  # same seed: the same kinds, arrivals and pooled images
    log(f"{design}: starting ({', '.join(f'{k} {v:g}' for k, v in cpu_budget(design, config).items())} CPUs)")
    with _serving(design, config) as running:
        sender = HttpSender(running.http_url, args.timeout_s)
        try:
            log(f"{design}: warming up ...")
            _warm_up(sender, generator, options)
            with ReplicaSampler(running.app_name, REPLICA_INTERVAL_S) as sampler:
                for i, rate in enumerate(args.rates):
                    log(f"{design}: {rate:g} req/s, at most {args.requests} requests / {args.seconds:g} s ...")
                    run = run_level(Level("open", rate), generator.take(args.requests), sender.send,
                                    max_seconds=args.seconds, seed=args.seed + i)
                    result.runs.append(run)
                    log(f"{design}: {sum(r.ok for r in run.records)}/{len(run.records)} ok in {run.duration_s:.0f} s")
        finally:
            sender.close()
    result.samples.append(sampler.samples)


# ---- reporting ------------------------------------------------------------------------------------


def chats_beside_images(records: list[Record]) -> list[Record]:
    """The chats that started while some image request of the same run was in flight."""
    images = [(r.scheduled_s, r.scheduled_s + r.e2e_s) for r in records if r.kind == "image"
              and not math.isnan(r.e2e_s)]
    return [r for r in records if r.kind == "chat" and any(start <= r.scheduled_s < end for start, end in images)]


@dataclass(frozen=True)
class DesignSummary:
    """One design at one rate, its rounds pooled."""

    design: str
    rate: float
    cpus: float
    level: LevelSummary
    ttft_p99_beside_images_ms: float
    images_per_min: float
    goodput_fraction: float  # requests within the SLO / requests sent

    def row(self) -> dict[str, object]:
        return {"design": self.design, "rate": self.rate, "cpus": self.cpus, **self.level.row(),
                "ttft_p99_beside_images_ms": self.ttft_p99_beside_images_ms,
                "images_per_min": self.images_per_min, "goodput_fraction": self.goodput_fraction}


def summarize_design(result: DesignResult, rate: float, slo: Slo) -> DesignSummary:
    runs = [run for run in result.runs if run.level.value == rate]
    records, duration = [r for run in runs for r in run.records], sum(run.duration_s for run in runs)
    level = summarize("open", rate, records, duration, slo)
    beside = [r.ttft_s for run in runs for r in chats_beside_images(run.records) if r.ok and r.ttft_s is not None]
    images = sum(r.ok and r.kind == "image" for r in records)
    return DesignSummary(
        design=result.design, rate=rate, cpus=round(sum(result.cpus.values()), 3), level=level,
        ttft_p99_beside_images_ms=percentile(beside, 99) * 1000,
        images_per_min=images / duration * 60 if duration > 0 else float("nan"),
        goodput_fraction=sum(slo.met_by(r) for r in records) / len(records) if records else float("nan"),
    )


def table(summaries: list[DesignSummary]) -> str:
    header = ["rate", "design", "CPUs", "ok/sent", "chat TTFT p50 ms", "chat TTFT p99 ms", "p99 beside images ms",
              "chat E2E p50 ms", "images/min", "image E2E p50 ms", "goodput/s", "within SLO", "errors"]
    rows = [[f"{s.rate:g} req/s", s.design, f"{s.cpus:g}", f"{s.level.ok}/{s.level.requests}", s.level.ttft_ms[50], s.level.ttft_ms[99],
             s.ttft_p99_beside_images_ms, s.level.chat_e2e_ms[50], s.images_per_min, s.level.image_e2e_ms[50],
             s.level.goodput_per_s, f"{s.goodput_fraction:.0%}",
             " ".join(f"{code}:{n}" for code, n in sorted(s.level.errors.items())) or "none"] for s in summaries]
    return markdown_table(header, rows)


def ratios(summaries: list[DesignSummary], rate: float) -> dict[str, float]:
    """separate / monolith for the headline numbers at one rate."""
    by = {s.design: s for s in summaries if s.rate == rate}
    separate, monolith = by["separate"], by["monolith"]

    def ratio(get: Callable[[DesignSummary], float]) -> float:
        return get(separate) / get(monolith) if get(monolith) else float("nan")

    return {"chat TTFT p99": ratio(lambda s: s.level.ttft_ms[99]),
            "chat TTFT p50": ratio(lambda s: s.level.ttft_ms[50]),
            "chat TTFT p99 beside images": ratio(lambda s: s.ttft_p99_beside_images_ms),
            "images/min": ratio(lambda s: s.images_per_min),
            "goodput/s": ratio(lambda s: s.level.goodput_per_s)}


def write_results(args: argparse.Namespace, results: list[DesignResult], summaries: list[DesignSummary]) -> list[Path]:
    from benchmarks.disaggregation_plot import plot_disaggregation

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "summary.csv", [s.row() for s in summaries])
    write_csv(args.out / "requests.csv", [
        {"design": result.design, "rate": run.level.value, "level_run": i, "index": r.index, "kind": r.kind,
         "start_s": round(r.scheduled_s - run.started_s, 4), "status": r.status, "ttft_s": r.ttft_s,
         "tpot_s": r.tpot_s, "e2e_s": r.e2e_s, "output_tokens": r.output_tokens, "cache_hit": r.cache_hit,
         "error": r.error}
        for result in results for i, run in enumerate(result.runs)
        for r in sorted(run.records, key=lambda r: r.scheduled_s)])
    write_csv(args.out / "replicas.csv", [
        {"design": result.design, "round": i, "t_s": round(s.t_s - samples[0].t_s, 3), "deployment": name,
         "running": n, "starting": s.starting.get(name, 0)}
        for result in results for i, samples in enumerate(result.samples) for s in samples
        for name, n in s.counts.items()])
    title = (f"profile {args.profile}: Poisson arrivals, mix "
             + ",".join(f"{k}={v:g}" for k, v in args.mix.items()) + f", {args.cpus:g} CPUs each (num_cpus)")
    plot = plot_disaggregation(results, summaries, args.slo.ttft_s * 1000, args.out / "disaggregation.png", title)
    return [args.out / name for name in ("summary.csv", "requests.csv", "replicas.csv")] + [plot]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process(args.threads)
    results = {design: DesignResult(design, cpu_budget(design, design_config(design, args))) for design in DESIGNS}
    for round_ in range(args.rounds):
        for design in DESIGNS if round_ % 2 == 0 else reversed(DESIGNS):
            run_design(design, args, results[design])
    summaries = [summarize_design(results[design], rate, args.slo) for rate in args.rates for design in DESIGNS]
    machine = machine_summary()
    print(f"\nDisaggregation benchmark: profile {args.profile}, Poisson arrivals at "
          + ", ".join(f"{rate:g}" for rate in args.rates) + " req/s over HTTP, mix "
          + ", ".join(f"{k} {v:g}" for k, v in args.mix.items())
          + f", chat {args.max_tokens} tokens (repeat fraction {args.repeat_fraction:g} over {args.pool_size} "
          f"images), images {args.image_steps} steps at {args.image_size}px; at most {args.requests} requests / "
          f"{args.seconds:g} s per level, design and round, {args.rounds} round(s)")
    print(f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, {machine['memory_gib']} GiB; "
          f"torch {machine['torch']}, ray {machine.get('ray', '?')}, {args.threads} torch thread(s) per replica")
    for design in DESIGNS:
        cpus, result = results[design].cpus, results[design]
        idle = sorted({name for samples in result.samples for s in samples for name in s.counts} - set(cpus))
        print(f"CPUs, {design}: " + " + ".join(f"{name} {n:g}" for name, n in cpus.items())
              + f" = {sum(cpus.values()):g}; idle, {IDLE_CPUS:g} each: {', '.join(idle) or 'none'}")
    print(f"SLO for goodput: {args.slo.describe()}\n")
    print(table(summaries))
    for rate in args.rates:
        print(f"\nseparate / monolith at {rate:g} req/s: "
              + ", ".join(f"{name} {value:.2f}x" for name, value in ratios(summaries, rate).items()))
    for path in write_results(args, list(results.values()), summaries):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
