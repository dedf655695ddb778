"""Text-to-image benchmark: ``python -m benchmarks.text_to_image [--quick] [--repeats N] [--json PATH]``.

One run, one machine, the ``bench`` profile's ``bench-sd`` (SD 1.x's U-Net layout at reduced width,
random weights; ``--quick``: ``tiny`` / ``tiny-sd`` with fewer settings). Every request is the same
prompt, seed, size (the model's native size), n = 1 and the server's default guidance scale, so
classifier-free guidance runs the U-Net at batch 2. Tables quote medians over ``--repeats`` rounds
after a warm-up; within a round every setting runs once, round-robin, so a noisy shared machine
slows all settings alike.

Sections (each ratio is measured side by side in this run):

1. Samplers x steps (``DenoiserEngine.denoise``, in-process): denoise time, relative error of the
   final latents ``||x - x_ref|| / ||x_ref||`` against a 200-step ``ddim`` reference from the same
   noise, and the speed-up against 50-step ``ddim``.
2. DeepCache: ``cache_interval`` 1, 2, 3, 5 x {ddim, dpmpp_2m} x {4, 8, 20} steps: time, error
   against the reference and against interval 1, speed-up against interval 1, full U-Net calls.
3. Baseline: the plain diffusers ``StableDiffusionPipeline`` (its checkpoint's default scheduler,
   PNDM, 50 steps, prompt -> PIL image) vs Triptych's defaults (dpmpp_2m, 8 steps) in-process and
   through Serve.
4. VAE decode vs denoise (why the ``Denoiser`` deployment decodes itself).
5. Serve: 4 gRPC ``GenerateImage`` requests (same size, sampler, steps; seeds differ) one after
   another vs all 4 at once, images/s through the ``Denoiser`` deployment's ``@serve.batch``
   (``--no-serve`` skips this and the served row of 3).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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

PROMPT = "a red circle above a blue square"
SAMPLERS = ("ddim", "euler", "dpmpp_2m", "unipc", "lcm")
REFERENCE = ("ddim", 200)
SERVE_REQUESTS = 4


@dataclass(frozen=True)
class Grid:
    """What one run measures (full vs ``--quick``)."""

    steps: tuple[int, ...] = (1, 2, 4, 8, 20, 50)
    cache_intervals: tuple[int, ...] = (1, 2, 3, 5)
    cache_samplers: tuple[str, ...] = ("ddim", "dpmpp_2m")
    cache_steps: tuple[int, ...] = (4, 8, 20)
    reference_steps: int = REFERENCE[1]
    baseline_steps: int = 50  # the diffusers pipeline's default num_inference_steps


QUICK = Grid(
    steps=(1, 2, 4, 8), cache_intervals=(1, 2, 3), cache_steps=(4, 8), reference_steps=50, baseline_steps=20
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.text_to_image", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, "tiny profile, fewer steps and intervals, 1 round: a smoke run in seconds", 3)
    args = parser.parse_args(argv)
    resolve_common_arguments(args, parser, 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()
    model_dir = model_root(args)
    bench = ImageBench(args, QUICK if args.quick else Grid(), model_dir, threads)
    bench.load()
    bench.measure_engine()
    if not args.no_serve:
        bench.measure_serve()
    result = bench.result(threads, time.perf_counter() - started, load_before, load_average())
    emit(result, render(result), args.json)
    return 0


def relative_error(latents, reference) -> float:
    """``||x - x_ref|| / ||x_ref||`` over all elements (float32)."""
    return float((latents.float() - reference.float()).norm() / reference.float().norm())


@dataclass
class Setting:
    """One measured configuration: times (ms) over the rounds and the error of its latents."""

    sampler: str
    steps: int
    cache_interval: int = 1
    ms: Samples = field(default_factory=Samples)
    error: float = float("nan")  # against the reference
    latents: Any = None  # (n, C, h, w) from the first round
    full_unet_calls: int = 0


class ImageBench:
    """Loads the engine and the diffusers baseline once, then runs the rounds of each section."""

    def __init__(self, args: argparse.Namespace, grid: Grid, model_dir: Path, threads: int):
        self.args, self.grid, self.model_dir, self.threads = args, grid, model_dir, threads
        self.notes: list[str] = []
        self.serve: dict[str, Any] | None = None

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        from denoisers import DenoiserEngine, TextEncoderEngine
        from models.profiles import resolve_image_model
        from triptych.config import ImageDefaults
        from triptych.types import ImageParams

        args = self.args
        log(
            f"image model {args.model or '(profile default)'} of profile {args.profile} under {self.model_dir}"
        )
        self.model_path = resolve_image_model(args.profile, self.model_dir, args.model)
        self.engine = DenoiserEngine.from_pretrained(
            self.model_path, max_steps=max(self.grid.reference_steps, 150)
        )
        self.text = TextEncoderEngine.from_pretrained(self.model_path)
        self.defaults = ImageDefaults()
        self.size = int(self.engine.unet.config.sample_size) * self.engine.vae_scale_factor  # native size
        self.params = ImageParams(
            width=self.size,
            height=self.size,
            steps=self.defaults.steps,
            sampler=self.defaults.sampler,
            guidance_scale=self.defaults.guidance_scale,
            seed=0,
            n=1,
            cache_interval=1,  # samplers are compared without DeepCache; its grid is measured separately
        )
        self.cond = self.text.encode_prompt(PROMPT)  # (T, D)
        self.uncond = self.text.encode_prompt("", allow_empty=True)
        self.full_calls = _CallCounter(self.engine.unet)

    # -- in-process sections -------------------------------------------------------------------------

    def denoise(self, setting: Setting) -> float:
        params = replace(
            self.params, sampler=setting.sampler, steps=setting.steps, cache_interval=setting.cache_interval
        )
        self.full_calls.count = 0
        start = time.perf_counter()
        latents = self.engine.denoise(self.cond, self.uncond, params)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if setting.latents is None:
            setting.latents, setting.full_unet_calls = latents, self.full_calls.count
        elif not bool((latents == setting.latents).all()):
            self.notes.append(
                f"{setting.sampler}, {setting.steps} steps, interval {setting.cache_interval}: "
                "latents differ between rounds"
            )
        return elapsed_ms

    def measure_engine(self) -> None:
        g = self.grid
        self.table = [Setting(s, n) for s in SAMPLERS for n in g.steps]
        self.cached = [
            Setting(s, n, k) for s in g.cache_samplers for n in g.cache_steps for k in g.cache_intervals
        ]
        log(f"reference: {REFERENCE[0]}, {g.reference_steps} steps")
        self.reference = Setting(REFERENCE[0], g.reference_steps)
        self.reference.ms.add(self.denoise(self.reference))
        self.baseline = DiffusersBaseline(self.model_path, self.params, self.engine)
        ours: dict[str, Samples] = {
            "engine_e2e_ms": Samples(),
            "decode_1_ms": Samples(),
            f"decode_{SERVE_REQUESTS}_ms": Samples(),
        }
        base = Samples()
        rounds = self.args.repeats + 1
        for round_ in range(rounds):
            log(f"round {round_}/{rounds - 1}" + (" (warm-up, not counted)" if round_ == 0 else ""))
            if round_ == 0:  # warm every sampler's kernels and the decode once, cheaply
                for sampler in SAMPLERS:
                    self.denoise(Setting(sampler, 1))
                self.denoise(Setting(g.cache_samplers[0], 2, 2))  # DeepCache's shallow path too
                self.engine.decode(self.reference.latents)
                self.baseline.once(PROMPT, 1)
                continue
            for setting in self.table + self.cached:
                setting.ms.add(self.denoise(setting))
            ours["engine_e2e_ms"].add(self.engine_end_to_end())
            base.add(self.baseline.once(PROMPT, g.baseline_steps))
            for n in (1, SERVE_REQUESTS):
                latents = self.reference.latents.expand(n, -1, -1, -1)
                start = time.perf_counter()
                self.engine.decode(latents)
                ours[f"decode_{n}_ms"].add((time.perf_counter() - start) * 1000)
        for setting in self.table + self.cached:
            setting.error = relative_error(setting.latents, self.reference.latents)
        self.engine_ms = ours
        self.baseline_ms = base

    def engine_end_to_end(self) -> float:
        """Triptych's defaults in-process, what the pipeline call does: prompts -> PIL image."""
        start = time.perf_counter()
        cond = self.text.encode_prompt(PROMPT)
        uncond = self.text.encode_prompt("", allow_empty=True)
        self.engine.decode(self.engine.denoise(cond, uncond, self.params))
        return (time.perf_counter() - start) * 1000

    # -- Serve ---------------------------------------------------------------------------------------

    def measure_serve(self) -> None:
        from deployments.server import serving
        from launcher.client import TriptychClient
        from triptych.config import DeploymentOptions, TriptychConfig

        config = TriptychConfig(
            profile=self.args.profile,
            model_dir=self.model_dir,
            image_model=self.args.model,
            http_port=free_port(),
            grpc_port=free_port(),
            vision_encoder=DeploymentOptions(num_cpus=0.1),  # idle here; one replica each, no autoscaling
            llm_decoder=DeploymentOptions(num_cpus=0.1),
            denoiser=DeploymentOptions(num_cpus=0.5, max_ongoing_requests=8, torch_threads=self.threads),
        )
        log("starting Serve (embedded Redis, local Ray)")
        with (
            serving(config, quiet=True) as server,
            TriptychClient(server.grpc_target, timeout_s=900.0) as client,
        ):
            denoiser = server.deployment_handle("Denoiser")
            self.serve_batch = config.denoiser_batch
            stats: dict[str, dict[str, Samples]] = {
                mode: {"wall_ms": Samples(), "images_per_batch": Samples()}
                for mode in ("sequential", "concurrent")
            }
            request_ms, stage_ms = Samples(), {"denoise": Samples(), "vae_decode": Samples()}
            rounds = self.args.repeats + 1
            for round_ in range(rounds):
                log(f"Serve round {round_}/{rounds - 1}" + (" (warm-up)" if round_ == 0 else ""))
                for mode in stats:
                    batches = denoiser.stats.remote().result()["batches"]
                    start = time.perf_counter()
                    results = self._serve_requests(client, mode, seed=100 * round_)
                    wall_ms = (time.perf_counter() - start) * 1000
                    formed = denoiser.stats.remote().result()["batches"] - batches
                    if round_ == 0:
                        continue
                    stats[mode]["wall_ms"].add(wall_ms)
                    stats[mode]["images_per_batch"].add(SERVE_REQUESTS / max(formed, 1))
                    if mode == "sequential":
                        for elapsed_ms, timings in results:
                            request_ms.add(elapsed_ms)
                            for stage, samples in stage_ms.items():
                                samples.add(timings.get(stage, float("nan")))
        self.serve = {
            mode: {
                "images_per_s": SERVE_REQUESTS / (s["wall_ms"].median / 1000),
                "wall_ms": s["wall_ms"].median,
                "images_per_batch": s["images_per_batch"].median,
                "samples_ms": s["wall_ms"].values,
            }
            for mode, s in stats.items()
        }
        self.serve["request_ms"] = request_ms.median
        self.serve["stages_ms"] = {stage: s.median for stage, s in stage_ms.items()}

    def _serve_requests(self, client, mode: str, seed: int) -> list[tuple[float, dict[str, float]]]:
        from triptych.v1 import triptych_pb2 as pb

        p = self.params

        def one(i: int) -> tuple[float, dict[str, float]]:
            request = pb.GenerateImageRequest(
                prompt=PROMPT,
                width=p.width,
                height=p.height,
                steps=p.steps,
                sampler=p.sampler,
                guidance_scale=p.guidance_scale,
                seed=seed + i,
                n=1,
                cache_interval=p.cache_interval,
            )
            start = time.perf_counter()
            events = list(client.generate_image(request))
            if not events or not events[-1].HasField("result") or len(events[-1].result.images) != 1:
                raise RuntimeError(f"GenerateImage returned no image: {events[-1:]}")
            return (time.perf_counter() - start) * 1000, dict(events[-1].result.timings_ms)

        if mode == "sequential":
            return [one(i) for i in range(SERVE_REQUESTS)]
        with ThreadPoolExecutor(SERVE_REQUESTS) as pool:
            return list(pool.map(one, range(SERVE_REQUESTS)))

    # -- the result --------------------------------------------------------------------------------

    def result(self, threads: int, runtime_s: float, load_before: str, load_after: str) -> dict[str, Any]:
        base_steps = max(self.grid.steps)  # 50: the step count a user would otherwise pick
        slow = next(s for s in self.table if (s.sampler, s.steps) == ("ddim", base_steps))
        table = [
            {
                "sampler": s.sampler,
                "steps": s.steps,
                "denoise_ms": s.ms.median,
                "error": s.error,
                "speedup_vs_ddim_max": slow.ms.median / s.ms.median,
                "samples_ms": s.ms.values,
            }
            for s in self.table
        ]
        by_key = {(s.sampler, s.steps, s.cache_interval): s for s in self.cached}
        deep_cache = []
        for s in self.cached:
            plain = by_key[(s.sampler, s.steps, 1)]
            deep_cache.append(
                {
                    "sampler": s.sampler,
                    "steps": s.steps,
                    "cache_interval": s.cache_interval,
                    "full_unet_calls": s.full_unet_calls,
                    "denoise_ms": s.ms.median,
                    "error": s.error,
                    "error_vs_interval_1": relative_error(s.latents, plain.latents),
                    "speedup_vs_interval_1": plain.ms.median / s.ms.median,
                    "samples_ms": s.ms.values,
                }
            )
        default = (
            next(s for s in self.table if (s.sampler, s.steps) == (self.params.sampler, self.params.steps))
            if self.params.steps in self.grid.steps
            else None
        )
        per_step_ms = slow.ms.median / base_steps
        decode_ms = self.engine_ms["decode_1_ms"].median
        latent_bytes = self.reference.latents[0].numel() * 4
        vae = {
            "decode_1_image_ms": decode_ms,
            f"decode_{SERVE_REQUESTS}_images_ms": self.engine_ms[f"decode_{SERVE_REQUESTS}_ms"].median,
            "unet_cfg_step_ms": per_step_ms,  # ddim at base_steps / base_steps
            "decode_in_unet_steps": decode_ms / per_step_ms,
            "default_denoise_ms": default.ms.median if default else None,
            "decode_share_of_default": decode_ms / (decode_ms + default.ms.median) if default else None,
            "latent_bytes_per_image": latent_bytes,
        }
        baseline = {
            "diffusers": {
                "scheduler": self.baseline.scheduler_name,
                "steps": self.grid.baseline_steps,
                "unet_calls": self.baseline.unet_calls,
                "ms": self.baseline_ms.median,
                "error": relative_error(self.baseline.latents, self.reference.latents),
            },
            "triptych_engine": {
                "scheduler": self.params.sampler,
                "steps": self.params.steps,
                "unet_calls": self.params.steps,
                "ms": self.engine_ms["engine_e2e_ms"].median,
                "error": default.error if default else None,
            },
        }
        if self.serve:
            baseline["triptych_serve"] = {
                "scheduler": self.params.sampler,
                "steps": self.params.steps,
                "unet_calls": self.params.steps,
                "ms": self.serve["request_ms"],
                "error": default.error if default else None,
            }
        for entry in baseline.values():
            entry["speedup_vs_diffusers"] = baseline["diffusers"]["ms"] / entry["ms"]
        notes = [
            *self.notes,
            (
                f"the diffusers baseline runs the checkpoint's own scheduler config ({self.baseline.scheduler_name}, "
                f"SD 1.x's 'leading' spacing): its first step is at t = {self.baseline.first_timestep}, not 999, "
                "which is most of its error against the reference."
            ),
            (
                "lcm is a sampler for consistency-distilled models (or an LCM-LoRA); this checkpoint is not one, "
                "so its error grows with steps here (TECHNIQUES.md)."
            ),
        ]
        return {
            "benchmark": "text_to_image",
            "profile": self.args.profile,
            "model": self.model_path.name,
            "machine": {
                **machine_summary(),
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "settings": {
                "repeats": self.args.repeats,
                "warmup_rounds": 1,
                "prompt": PROMPT,
                "negative_prompt": "",
                "size": f"{self.size}x{self.size}",
                "n": 1,
                "seed": self.params.seed,
                "guidance_scale": self.params.guidance_scale,
                "threads": threads,
                "reference": f"{REFERENCE[0]} {self.grid.reference_steps} steps",
                "reference_ms": self.reference.ms.median,
                "speedup_base": f"ddim {base_steps}",
                "default": f"{self.params.sampler} {self.params.steps} steps",
                "serve_batch": self.serve_batch.model_dump() if self.serve else None,
            },
            "samplers": table,
            "deep_cache": deep_cache,
            "baseline": baseline,
            "vae": vae,
            "serve": self.serve,
            "notes": notes,
            "runtime_s": round(runtime_s, 1),
        }


class _CallCounter:
    """Counts full forwards of a module (a forward hook; DeepCache's cached steps do not call it)."""

    def __init__(self, module):
        self.count = 0
        module.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.count += 1


class DiffusersBaseline:
    """What a user would otherwise write: ``StableDiffusionPipeline`` with the checkpoint's scheduler.

    Same prompt, size, guidance and starting noise as Triptych (``latents=``); prompt -> PIL image.
    The final latents are kept (``callback_on_step_end``) for the error against the reference.
    """

    def __init__(self, model_path: Path, params, engine):
        import torch
        from diffusers import StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_pretrained(
            model_path,
            dtype=torch.float32,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=True,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.scheduler_name = type(self.pipe.scheduler).__name__
        self.params = params
        self.noise, _ = engine.initial_noise(params)  # (1, C, h, w): the same start as Triptych
        self.calls = _CallCounter(self.pipe.unet)
        self.latents = None
        self.unet_calls = 0

    def once(self, prompt: str, steps: int) -> float:
        def keep(pipe, i, t, tensors):
            self.latents = tensors["latents"]
            return tensors

        p = self.params
        self.calls.count = 0
        start = time.perf_counter()
        self.pipe(
            prompt,
            height=p.height,
            width=p.width,
            num_inference_steps=steps,
            guidance_scale=p.guidance_scale,
            latents=self.noise.clone(),
            callback_on_step_end=keep,
        )
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.unet_calls = self.calls.count
        self.first_timestep = int(self.pipe.scheduler.timesteps[0])
        return elapsed_ms


# ---- the tables ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%" if value < 0.1 else f"{100 * value:.1f}%"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        f"## Text-to-image benchmark: profile `{result['profile']}` (model `{result['model']}`)",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores ({m['usable_cores']} usable), {m['memory_gib']} GiB RAM; "
        f"torch {m['torch']}"
        + (f", ray {m['ray']}" if "ray" in m else "")
        + f"; load average {m['load_average_before']} before, {m['load_average_after']} after.",
        (
            f'Request: "{s["prompt"]}", {s["size"]}, n {s["n"]}, seed {s["seed"]}, guidance {s["guidance_scale"]} '
            f"(U-Net batch 2); {s['threads']} torch threads. Medians of {s['repeats']} round(s) after "
            f"{s['warmup_rounds']} warm-up round. Error = ||x - x_ref|| / ||x_ref|| of the final latents against "
            f"{s['reference']} from the same noise ({_ms(s['reference_ms'])})."
        ),
        "",
        "### Samplers x steps (DenoiserEngine.denoise, in-process)",
        "",
        markdown_table(
            ["sampler", "steps", "denoise", "latent error vs ref", f"speed-up vs {s['speedup_base']}"],
            [
                [
                    r["sampler"],
                    r["steps"],
                    _ms(r["denoise_ms"]),
                    _pct(r["error"]),
                    _x(r["speedup_vs_ddim_max"]),
                ]
                for r in result["samplers"]
            ],
        ),
        "",
        "### DeepCache (cache_interval)",
        "",
        markdown_table(
            [
                "sampler",
                "steps",
                "interval",
                "full U-Net calls",
                "denoise",
                "error vs ref",
                "error vs interval 1",
                "speed-up vs interval 1",
            ],
            [
                [
                    r["sampler"],
                    r["steps"],
                    r["cache_interval"],
                    r["full_unet_calls"],
                    _ms(r["denoise_ms"]),
                    _pct(r["error"]),
                    _pct(r["error_vs_interval_1"]),
                    _x(r["speedup_vs_interval_1"]),
                ]
                for r in result["deep_cache"]
            ],
        ),
        "",
        "### Triptych vs the plain diffusers pipeline (prompt -> image, same request and starting noise)",
        "",
    ]
    labels = {
        "diffusers": "diffusers StableDiffusionPipeline (baseline)",
        "triptych_engine": "Triptych default, in-process engine",
        "triptych_serve": "Triptych default, Serve gRPC request",
    }
    lines.append(
        markdown_table(
            ["path", "scheduler", "steps", "U-Net calls", "end to end", "latent error vs ref", "speed-up"],
            [
                [
                    labels[k],
                    b["scheduler"],
                    b["steps"],
                    b["unet_calls"],
                    _ms(b["ms"]),
                    _pct(b["error"]),
                    _x(b["speedup_vs_diffusers"]),
                ]
                for k, b in result["baseline"].items()
            ],
        )
    )
    v = result["vae"]
    lines += [
        "",
        "### VAE decode vs denoise",
        "",
        markdown_table(
            ["quantity", "value"],
            [
                ["VAE decode, 1 image", _ms(v["decode_1_image_ms"])],
                [
                    f"VAE decode, {SERVE_REQUESTS} images in one call",
                    _ms(v[f"decode_{SERVE_REQUESTS}_images_ms"]),
                ],
                [f"one U-Net CFG step ({s['speedup_base']} / steps)", _ms(v["unet_cfg_step_ms"])],
                ["decode in U-Net steps", f"{v['decode_in_unet_steps']:.1f}"],
                [
                    f"denoise at the default ({s['default']})",
                    "-" if v["default_denoise_ms"] is None else _ms(v["default_denoise_ms"]),
                ],
                ["decode share of denoise + decode at the default", _pct(v["decode_share_of_default"])],
                [
                    "latents per image (what a separate VAE deployment would be sent)",
                    f"{v['latent_bytes_per_image']:,} B",
                ],
            ],
        ),
    ]
    serve = result["serve"]
    if serve:
        seq, conc = serve["sequential"], serve["concurrent"]
        b = s["serve_batch"]
        lines += [
            "",
            (
                f"### Serve: {SERVE_REQUESTS} GenerateImage requests ({s['default']}, {s['size']}) through "
                f"the Denoiser deployment (@serve.batch max_batch_size {b['max_batch_size']}, "
                f"wait {b['batch_wait_timeout_s']} s)"
            ),
            "",
            markdown_table(
                ["mode", "wall time", "images/s", "images per Denoiser batch", "speed-up"],
                [
                    [
                        "one at a time (batch 1)",
                        _ms(seq["wall_ms"]),
                        f"{seq['images_per_s']:.2f}",
                        f"{seq['images_per_batch']:.1f}",
                        "1.00x",
                    ],
                    [
                        f"{SERVE_REQUESTS} at once",
                        _ms(conc["wall_ms"]),
                        f"{conc['images_per_s']:.2f}",
                        f"{conc['images_per_batch']:.1f}",
                        _x(conc["images_per_s"] / seq["images_per_s"]),
                    ],
                ],
            ),
            "",
            "Served request (one at a time): "
            + ", ".join(
                [f"total {_ms(serve['request_ms'])}"]
                + [f"{k} {_ms(val)}" for k, val in serve["stages_ms"].items()]
            )
            + " (server timings_ms).",
        ]
    lines.append("")
    for note in result["notes"]:
        lines.append(f"Note: {note}")
    lines.append(f"Total benchmark runtime: {result['runtime_s']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
