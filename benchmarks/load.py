"""Load benchmark: ``python -m benchmarks.load [--profile tiny|bench] [--transport http|grpc] ...``.

Many users at once against one Triptych: open-loop Poisson arrivals at each ``--rates`` level and
closed-loop users at each ``--concurrency`` level, a ``--mix`` of chat (one image each; a
``--repeat-fraction`` of them reuse a pooled image, so the cache hit rate is a knob) and
text-to-image, over HTTP (the official ``openai`` client, streaming) or gRPC (``TriptychClient``).
Each level sends at most ``--requests`` requests and starts none after ``--seconds``; loopback only.

By default it starts its own Triptych (``--profile``, default ``tiny``; ``bench`` for the real
numbers) whose stage deployments autoscale (``benchmarks.load_server``), and samples every
deployment's RUNNING replicas from ``serve.status()``. ``--url`` / ``--grpc-target`` target a running
server instead; add ``--ray-address`` to sample its replicas too. After the last level it keeps
sampling for up to ``--cooldown-s`` until the replica counts are back where they started.

It prints a table per level (TTFT, inter-token latency, end-to-end at p50/p95/p99, requests/s, output
tokens/s, goodput under the SLO ``--slo-*``, cache hit rate from ``usage.cache_hit``, errors by status
code, and how many requests were retried: refused before any byte, each is resent up to ``--retries``
times with exponential backoff) and writes to ``--out``: summary.csv (per level), requests.csv (per
request), replicas.csv, and latency_vs_load.png and replicas.png. Timing definitions: ``benchmarks.load_transports``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import configure_process, log, model_root
from benchmarks.load_drivers import Level, LevelRun, run_level
from benchmarks.load_server import loopback_target, loopback_url
from benchmarks.load_stats import PERCENTILES, LevelSummary, Slo, summarize
from benchmarks.load_transports import SENDERS, TRANSPORTS
from benchmarks.load_workload import QUESTION, RequestSpec, WorkloadGenerator, WorkloadOptions, parse_mix
from benchmarks.report import machine_summary, markdown_table
from launcher.retry import RetryPolicy
from triptych.auth import API_KEY_ENV

DEFAULT_OUT = Path("benchmarks/results")


def _number_list(kind: type, minimum_text: str, check: Callable[[float], bool]):
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        bad = [v for v in values if not check(v)]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"every value must be {minimum_text}, got {text!r}")
        return values
    return parse


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[1])
    load = parser.add_argument_group("load")
    load.add_argument("--mode", choices=("open", "closed", "both"), default="both",
                      help="open-loop rates, closed-loop concurrency, or both (default)")
    load.add_argument("--rates", type=_number_list(float, "> 0", lambda v: v > 0), default=[1.0, 2.0, 4.0],
                      help="open loop: Poisson arrival rates, requests/s (default 1,2,4)")
    load.add_argument("--concurrency", type=_number_list(int, ">= 1", lambda v: v >= 1), default=[1, 4, 8],
                      help="closed loop: concurrent users (default 1,4,8)")
    load.add_argument("--requests", type=_positive(int), default=40, help="at most this many per level (40)")
    load.add_argument("--seconds", type=_positive(float), default=30.0,
                      help="no request starts later than this into a level (30)")
    load.add_argument("--max-inflight", type=_positive(int), default=64,
                      help="open loop: client threads; arrivals past it wait (64)")
    load.add_argument("--timeout-s", type=_positive(float), default=120.0, help="per request (120)")
    load.add_argument("--retries", type=int, choices=range(11), default=RetryPolicy.retries, metavar="N",
                      help="resend a request refused before any byte (503 / UNAVAILABLE / RESOURCE_EXHAUSTED) "
                           f"up to N times with exponential backoff; 0 = never ({RetryPolicy.retries})")
    load.add_argument("--seed", type=int, default=0, help="arrivals, kinds and pooled images (0)")
    work = parser.add_argument_group("workload")
    work.add_argument("--mix", default="chat=0.8,image=0.2", help="kind=weight,... of chat, image")
    work.add_argument("--repeat-fraction", type=_fraction, default=0.5,
                      help="chat requests that reuse a pooled image: the cache-hit knob (0.5)")
    work.add_argument("--pool-size", type=_positive(int), default=4, help="distinct pooled images (4)")
    work.add_argument("--max-tokens", type=_positive(int), default=32, help="chat tokens per request (32)")
    work.add_argument("--image-steps", type=_positive(int), default=4, help="text-to-image steps (4)")
    work.add_argument("--image-size", type=_positive(int), default=64, help="text-to-image width=height (64)")
    work.add_argument("--no-warmup", action="store_true",
                      help="skip sending each pooled image (and one image request) before measuring")
    slo = parser.add_argument_group("SLO (goodput counts requests within all of these)")
    slo.add_argument("--slo-ttft-ms", type=_positive(float), default=Slo.ttft_s * 1000,
                     help=f"chat time to first token ({Slo.ttft_s * 1000:g})")
    slo.add_argument("--slo-tpot-ms", type=_positive(float), default=Slo.tpot_s * 1000,
                     help=f"chat time per output token after the first ({Slo.tpot_s * 1000:g})")
    slo.add_argument("--slo-image-ms", type=_positive(float), default=Slo.image_e2e_s * 1000,
                     help=f"text-to-image end-to-end ({Slo.image_e2e_s * 1000:g})")
    target = parser.add_argument_group("target")
    target.add_argument("--transport", choices=TRANSPORTS, default="http", help="http (openai client) or grpc")
    target.add_argument("--url", default=None, help="a running server's HTTP URL (loopback only)")
    target.add_argument("--grpc-target", default=None, help="a running server's gRPC host:port (loopback)")
    target.add_argument("--ray-address", default=None,
                        help="with --url/--grpc-target: the cluster to read replica counts from")
    target.add_argument("--app-name", default="triptych", help="the Serve application (triptych)")
    target.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                        help="a running server's API key, sent with every request (env TRIPTYCH_API_KEY)")
    own = parser.add_argument_group("the server started here (no --url / --grpc-target)")
    own.add_argument("--profile", default="tiny", help="model profile: tiny (quick) or bench (real numbers)")
    own.add_argument("--model-dir", type=Path, default=None, help="model root (TRIPTYCH_MODEL_DIR)")
    own.add_argument("--max-replicas", type=_positive(int), default=2, help="per stage deployment (2)")
    own.add_argument("--threads", type=_positive(int), default=1, help="torch threads per replica (1)")
    own.add_argument("--decoder-batch", type=_positive(int), default=None,
                     help="decoder continuous-batching max_batch_size (default: the config's, 8)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, help="results folder (benchmarks/results/load-PROFILE)")
    out.add_argument("--replica-interval-s", type=_positive(float), default=0.5, help="sampling period (0.5)")
    out.add_argument("--cooldown-s", type=float, default=30.0,
                     help="after the load: sample until replicas are back to the start, at most this (30)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; every refusal is an argparse error naming its flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.mix = parse_mix(args.mix)
    except ValueError as exc:
        parser.error(f"--mix: {exc}")
    for flag in ("url", "grpc_target"):
        value = getattr(args, flag)
        if value is not None:
            try:
                setattr(args, flag, (loopback_url if flag == "url" else loopback_target)(value))
            except ValueError as exc:
                parser.error(f"--{flag.replace('_', '-')}: {exc}")
    external = args.url is not None or args.grpc_target is not None
    if external and (args.url if args.transport == "http" else args.grpc_target) is None:
        needed = "--url" if args.transport == "http" else "--grpc-target"
        parser.error(f"{needed}: needed by --transport {args.transport} against a running server")
    if args.decoder_batch and external:
        parser.error("--decoder-batch: only for the server started here (not with --url / --grpc-target)")
    if args.ray_address and not external:
        parser.error("--ray-address: only with --url / --grpc-target (a server started here is sampled directly)")
    if args.cooldown_s < 0:
        parser.error(f"--cooldown-s: must be >= 0, got {args.cooldown_s:g}")
    args.levels = ([Level("open", r) for r in args.rates] if args.mode in ("open", "both") else []) + (
        [Level("closed", c) for c in args.concurrency] if args.mode in ("closed", "both") else [])
    args.slo = Slo(args.slo_ttft_ms / 1000, args.slo_tpot_ms / 1000, args.slo_image_ms / 1000)
    args.profile_label = args.profile if not external else "external server"
    args.out = args.out or DEFAULT_OUT / f"load-{args.profile if not external else 'external'}"
    return args


# ---- running ------------------------------------------------------------------------------------


def _server(args, stack: ExitStack) -> tuple[str, str, str | None]:
    """(HTTP URL, gRPC target, app name to sample or None): a running server's, or one started here."""
    if args.url or args.grpc_target:
        if not args.ray_address:
            return args.url, args.grpc_target, None
        import ray

        ray.init(address=args.ray_address, log_to_driver=False)
        stack.callback(ray.shutdown)
        return args.url, args.grpc_target, args.app_name
    from benchmarks.load_server import autoscaling_config
    from deployments.server import serving
    from triptych.config import DecoderBatching

    batching = DecoderBatching(**({"max_batch_size": args.decoder_batch} if args.decoder_batch else {}))
    config = autoscaling_config(args.profile, model_root(args), args.max_replicas, batching)
    log(f"starting Triptych (profile {args.profile}, stages autoscale 1..{args.max_replicas}) ...")
    running = stack.enter_context(serving(config, quiet=True))
    return running.http_url, running.grpc_target, running.app_name


def _warm_up(sender, generator: WorkloadGenerator, options: WorkloadOptions) -> None:
    """Each pooled image once (so repeats hit the cache) and one text-to-image request; not measured."""
    specs = [RequestSpec(-1 - i, "chat", QUESTION, image=image, max_tokens=4)
             for i, image in enumerate(generator.pool)] if "chat" in options.mix else []
    if "image" in options.mix:
        specs.append(RequestSpec(-100, "image", "warm-up", steps=1, size=options.image_size))
    for spec in specs:
        record = sender.send(spec, time.perf_counter())
        if not record.ok:
            log(f"warm-up {spec.kind} request failed: {record.status} {record.error}")


def _wait_back(sampler, baseline: dict[str, int], timeout_s: float, progress_note: Callable[[str], None]) -> None:
    """Sample until every deployment is back to its starting replica count, or ``timeout_s`` passes."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        latest = sampler.latest()
        progress_note(_replica_text(latest))
        if all(latest.get(name, 0) <= count for name, count in baseline.items()):
            return
        time.sleep(sampler.interval_s)


SHORT_NAMES = {"TriptychIngress": "ingress", "VisionEncoder": "encoder", "LLMDecoder": "decoder",
               "TextEncoder": "text", "Denoiser": "denoiser"}


def _replica_text(counts: dict[str, int]) -> str:
    """``decoder 2 encoder 1 ...``: the live display's replica counts (stages only)."""
    return "replicas " + " ".join(f"{short} {counts[name]}" for name, short in SHORT_NAMES.items() if name in counts)


def run(args: argparse.Namespace) -> tuple[list[LevelRun], list[LevelSummary], list]:
    """Start (or reach) the server, warm up, run every level, cool down: (runs, summaries, replica samples)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmarks.load_replicas import ReplicaSampler

    options = WorkloadOptions(mix=args.mix, repeat_fraction=args.repeat_fraction, pool_size=args.pool_size,
                              max_tokens=args.max_tokens, image_steps=args.image_steps,
                              image_size=args.image_size, seed=args.seed)
    generator = WorkloadGenerator(options)
    runs: list[LevelRun] = []
    with ExitStack() as stack:
        http_url, grpc_target, app_name = _server(args, stack)
        sender = SENDERS[args.transport](http_url if args.transport == "http" else grpc_target, args.timeout_s,
                                         args.api_key, RetryPolicy(retries=args.retries))
        stack.callback(sender.close)
        if not args.no_warmup:
            log("warming up ...")
            _warm_up(sender, generator, options)
        sampler = stack.enter_context(ReplicaSampler(app_name, args.replica_interval_s)) if app_name else None
        progress = stack.enter_context(Progress(
            TextColumn("{task.description:>10}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True)))
        baseline = dict(sampler.latest()) if sampler else {}
        for i, level in enumerate(args.levels):
            task = progress.add_task(level.label, total=args.requests, status="")
            counts = {"ok": 0, "err": 0}

            def on_done(record, task=task, counts=counts) -> None:
                counts["ok" if record.ok else "err"] += 1
                replicas = _replica_text(sampler.latest()) if sampler else ""
                progress.update(task, advance=1, status=f"ok {counts['ok']} err {counts['err']}  {replicas}")

            runs.append(run_level(level, generator.take(args.requests), sender.send, max_seconds=args.seconds,
                                  max_inflight=args.max_inflight, seed=args.seed + i, on_done=on_done))
        if sampler and args.cooldown_s > 0:
            task = progress.add_task("cool-down", total=None, status="")
            _wait_back(sampler, baseline, args.cooldown_s,
                       lambda note: progress.update(task, status=f"until back to the start: {note}"))
        samples = list(sampler.samples) if sampler else []
    summaries = [summarize(r.level.mode, r.level.value, r.records, r.duration_s, args.slo) for r in runs]
    return runs, summaries, samples


# ---- reporting ----------------------------------------------------------------------------------


def table(summaries: list[LevelSummary]) -> str:
    def triple(values: dict[int, float]) -> str:
        return "/".join("-" if math.isnan(values[q]) else f"{values[q]:.0f}" for q in PERCENTILES)

    has_images = any(not math.isnan(s.image_e2e_ms[50]) for s in summaries)
    header = ["load", "ok/sent", "retried", "req/s", "out tok/s", "goodput/s", "cache hit", "TTFT ms p50/95/99",
              "ITL ms p50/95/99", "chat E2E ms p50/95/99"] + (["image E2E ms p50/95/99"] if has_images else []) + [
              "errors"]
    rows = []
    for s in summaries:
        load = f"{s.load:g} req/s" if s.mode == "open" else f"{s.load:g} users"
        rows.append([load, f"{s.ok}/{s.requests}", s.retried, s.requests_per_s, s.output_tokens_per_s, s.goodput_per_s,
                     "-" if math.isnan(s.cache_hit_rate) else f"{s.cache_hit_rate:.0%}", triple(s.ttft_ms),
                     triple(s.itl_ms), triple(s.chat_e2e_ms)] + ([triple(s.image_e2e_ms)] if has_images else []) + [
                     " ".join(f"{code}:{n}" for code, n in sorted(s.errors.items())) or "none"])
    return markdown_table(header, rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def write_results(args, runs: list[LevelRun], summaries: list[LevelSummary], samples: list) -> list[Path]:
    """summary.csv, requests.csv, replicas.csv and the two PNGs under ``args.out``."""
    from benchmarks.load_plots import plot_latency_vs_load, plot_replicas

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "summary.csv", [s.row() for s in summaries])
    write_csv(args.out / "requests.csv", [
        {"mode": run.level.mode, "load": run.level.value, "index": r.index, "kind": r.kind,
         "transport": r.transport, "start_s": round(r.scheduled_s - run.started_s, 4), "status": r.status,
         "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "e2e_s": r.e2e_s, "output_tokens": r.output_tokens,
         "cache_hit": r.cache_hit, "repeated_image": r.repeated, "retries": r.retries, "error": r.error}
        for run in runs for r in sorted(run.records, key=lambda r: r.scheduled_s)])
    names = sorted({name for sample in samples for name in sample.counts})
    t0 = samples[0].t_s if samples else 0.0
    write_csv(args.out / "replicas.csv",
              [{"t_s": round(s.t_s - t0, 3), **{n: s.counts.get(n, 0) for n in names},
                **{f"{n}_starting": s.starting.get(n, 0) for n in names}} for s in samples])
    title = f"Triptych load, profile {args.profile_label}, {args.transport}, mix " + ",".join(
        f"{k}={v:g}" for k, v in args.mix.items())
    paths = [args.out / name for name in ("summary.csv", "requests.csv", "replicas.csv")]
    if summaries:
        paths.append(plot_latency_vs_load(summaries, args.out / "latency_vs_load.png", title))
    if samples:
        paths.append(plot_replicas(samples, runs, args.out / "replicas.png", title))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process(args.threads)
    runs, summaries, samples = run(args)
    machine = machine_summary()
    print(f"\nLoad benchmark: profile {args.profile_label}, transport {args.transport}, mix "
          + ", ".join(f"{k} {v:g}" for k, v in args.mix.items())
          + f", repeat fraction {args.repeat_fraction:g} over {args.pool_size} images, chat max_tokens "
          f"{args.max_tokens}, images {args.image_steps} steps at {args.image_size}px; at most {args.requests} "
          f"requests / {args.seconds:g} s per level")
    print(f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
          f"{machine['memory_gib']} GiB; torch {machine['torch']}, ray {machine.get('ray', '?')}")
    print(f"SLO for goodput: {args.slo.describe()}\n")
    print(table(summaries))
    for path in write_results(args, runs, summaries, samples):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
