"""`Denoiser` deployment: batched diffusion sampling with per-step progress, cancellation and VAE decode.

Concurrent requests are batched with `@serve.batch`; within a batch, requests that share
``denoisers.engine.batch_key`` (size, sampler, steps, cache_interval) run through one sampling loop
(one UNet call per step for all of them), other groups run one after another. The whole loop runs
inside the replica (in a worker thread, so the event loop keeps streaming progress). VAE decode
runs here too: shipping latents to another deployment would cost a hop for a decode that is a small
share of the work (see README). The replica holds a DenoiserEngine (through
``DenoiserEngineProtocol``): UNet, VAE and scheduler config, no text encoder.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch
from ray import serve

from denoisers.engine import DenoiseCancelled, DenoiseJob, DenoiserEngine, batch_key
from denoisers.protocol import DenoiserEngineProtocol
from deployments.faults import NO_FAULTS, fail_after_first_event, gated_seed, pass_gate_in_thread
from deployments.metrics import DenoiserMetrics
from triptych.config import BatchOptions, FaultInjection
from triptych.types import GeneratedImages, ImageParams, ImageProgress


@dataclass
class _Request:
    cond: torch.Tensor  # (T, D)
    uncond: torch.Tensor  # (T, D)
    params: ImageParams
    cancelled: threading.Event = field(default_factory=threading.Event)


@serve.deployment
class Denoiser:
    def __init__(self, model_path: str, batch: BatchOptions, max_image_size: int, device: str = "cpu",
                 faults: FaultInjection = NO_FAULTS):
        self._engine: DenoiserEngineProtocol = DenoiserEngine.from_pretrained(
            model_path, device=device, max_image_size=max_image_size
        )
        self._generate_batch.set_max_batch_size(batch.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        self._steps_run = 0
        self._batches = 0
        self._in_flight = 0
        self._metrics = DenoiserMetrics()
        self._faults = faults
        self._images_returned = 0

    async def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[ImageProgress | GeneratedImages]:
        request = _Request(cond, uncond, params)
        self._in_flight += 1
        try:
            async for event in self._generate_batch(request):
                if event is not None:
                    self._images_returned += isinstance(event, GeneratedImages)
                    yield event
                    fail_after_first_event(self._faults, params.seed, "denoiser")
        finally:  # normal end, error, or the caller went away: stop this request's share of the loop
            request.cancelled.set()
            self._in_flight -= 1

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def _generate_batch(self, requests: list[_Request]) -> AsyncIterator[list]:
        """Yields one list per event, one entry per request: an event, None (nothing for it this
        time) or StopIteration (it is finished)."""
        self._batches += 1
        finished: set[int] = set()
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(batch_key(request.params), []).append(index)
        for members in groups.values():
            async for per_member in self._run_group([requests[i] for i in members]):
                events: list = [StopIteration if i in finished else None for i in range(len(requests))]
                for i, event in zip(members, per_member):
                    events[i] = event
                yield events
            finished.update(members)
            yield [StopIteration if i in finished else None for i in range(len(requests))]

    async def _run_group(self, requests: list[_Request]) -> AsyncIterator[list]:
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue = asyncio.Queue()
        started = time.perf_counter()

        def on_step_for(request: _Request):
            def on_step(done: int, total: int) -> bool:
                self._metrics.generated(steps=1, images=0)  # every request's steps count
                if request is requests[0]:  # one progress event per step for the whole group
                    self._steps_run += 1
                    loop.call_soon_threadsafe(progress.put_nowait, (done, total))
                if done == 1:  # test-only (FaultInjection.gate_seed): hold the loop inside its first step
                    pass_gate_in_thread(self._faults, gated_seed(self._faults, request.params.seed), request.cancelled)
                return not request.cancelled.is_set()

            return on_step

        jobs = [DenoiseJob(r.cond, r.uncond, r.params, on_step_for(r)) for r in requests]
        work = asyncio.ensure_future(asyncio.to_thread(self._denoise_and_decode, jobs))
        while True:
            next_step = asyncio.ensure_future(progress.get())
            await asyncio.wait({work, next_step}, return_when=asyncio.FIRST_COMPLETED)
            if not next_step.done():
                next_step.cancel()
                break
            done, total = next_step.result()
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            yield [ImageProgress(done, total, round(elapsed_ms, 3)) for _ in requests]
        yield [r if isinstance(r, GeneratedImages) else StopIteration for r in await work]

    def _denoise_and_decode(self, jobs: list[DenoiseJob]) -> list[GeneratedImages | DenoiseCancelled]:
        start = time.perf_counter()
        latents = self._engine.denoise_batch(jobs)  # per job: (n, C, h, w) or DenoiseCancelled
        denoise_ms = (time.perf_counter() - start) * 1000.0
        results: list[GeneratedImages | DenoiseCancelled] = []
        for job, result in zip(jobs, latents):
            if isinstance(result, DenoiseCancelled):
                results.append(result)
                continue
            start = time.perf_counter()
            pngs = tuple(_png(image) for image in self._engine.decode(result))
            decode_ms = (time.perf_counter() - start) * 1000.0
            seeds = tuple(job.params.seed + i for i in range(job.params.n))
            self._metrics.generated(steps=0, images=len(pngs))
            results.append(GeneratedImages(pngs, seeds, {"denoise": round(denoise_ms, 3),
                                                          "vae_decode": round(decode_ms, 3)}))
        return results

    def stats(self) -> dict[str, int | str]:
        return {"steps_run": self._steps_run, "batches": self._batches, "in_flight": self._in_flight,
                "results": self._images_returned, "replica": serve.get_replica_context().replica_id.unique_id}


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
