"""gRPC text-to-image: GenerateImageRequest proto -> ImageRequest, and events -> response protos."""

from __future__ import annotations

from denoisers.params import draw_seed
from pipelines.image_request import ImageRequest
from triptych.config import ImageDefaults
from triptych.types import ImageParams, ImageProgress, ImageResult
from triptych.v1 import triptych_pb2 as pb


def image_request_from_proto(message: pb.GenerateImageRequest, defaults: ImageDefaults) -> ImageRequest:
    def optional(name: str, default):
        return getattr(message, name) if message.HasField(name) else default

    return ImageRequest(
        prompt=message.prompt,
        negative_prompt=message.negative_prompt,
        params=ImageParams(
            width=optional("width", defaults.width),
            height=optional("height", defaults.height),
            steps=optional("steps", defaults.steps),
            sampler=optional("sampler", defaults.sampler),
            guidance_scale=optional("guidance_scale", defaults.guidance_scale),
            seed=message.seed if message.HasField("seed") else draw_seed(),
            n=optional("n", 1),
            cache_interval=optional("cache_interval", defaults.cache_interval),
        ),
    )


def image_event_to_proto(event: ImageProgress | ImageResult) -> pb.GenerateImageResponse:
    if isinstance(event, ImageProgress):
        return pb.GenerateImageResponse(progress=pb.GenerateImageProgress(
            step=event.step, total_steps=event.total_steps, elapsed_ms=event.elapsed_ms))
    return pb.GenerateImageResponse(result=pb.GenerateImageResult(
        images=[pb.GeneratedImage(png=png, seed=seed) for png, seed in zip(event.pngs, event.seeds)],
        timings_ms=event.timings_ms,
        cache_hit=event.cache_hit,
    ))
