"""``generate``: the text-to-image pipeline (text encoder -> cache -> denoiser) as a step.

Takes the parsed ``request`` of the images APIs, or a ``prompt`` and optional knobs (server
defaults for the rest, checked like an images request). Streams ``ImageProgress`` per denoising
step and then the ``ImageResult`` as progress; outputs the first image and its seed, and all of them.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from typing import Any

from denoisers.params import draw_seed
from pipelines.image_request import ImageRequest, validate_image_request
from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param
from triptych.types import ImageParams, ImageResult


def image_request(context: OpContext, args: dict[str, Any]) -> ImageRequest:
    """The step's ImageRequest: the given one (its seed replaced by a fan-out's), or one built here."""
    if "request" in args:
        request = args["request"]
        if "seed" in args:
            request = dataclasses.replace(request, params=dataclasses.replace(request.params, seed=args["seed"]))
        return request
    defaults = context.image_defaults
    request = ImageRequest(
        prompt=args["prompt"],
        negative_prompt=args.get("negative_prompt", ""),
        params=ImageParams(
            width=args.get("width", defaults.width),
            height=args.get("height", defaults.height),
            steps=args.get("steps", defaults.steps),
            sampler=args.get("sampler", defaults.sampler),
            guidance_scale=float(args.get("guidance_scale", defaults.guidance_scale)),
            seed=args["seed"] if "seed" in args else draw_seed(),
            n=args.get("n", 1),
            cache_interval=args.get("cache_interval", defaults.cache_interval),
        ),
    )
    validate_image_request(request, defaults.max_size, context.limits.max_prompt_chars)
    return request


async def run(context: OpContext, args: dict[str, Any]):
    pipeline = context.need("text_to_image")
    result: ImageResult | None = None
    async with aclosing(pipeline.run(image_request(context, args))) as events:  # closing it stops the denoiser
        async for event in events:
            yield event
            if isinstance(event, ImageResult):
                result = event
    if result is None:
        raise RuntimeError("the text-to-image pipeline ended without images")
    yield OpOutput(
        {"image": result.pngs[0], "seed": result.seeds[0], "images": list(result.pngs), "seeds": list(result.seeds)},
        cache_hit=result.cache_hit,
    )


OP = Operation(
    name="generate",
    description="paint images from a prompt with the diffusion model (streams denoising progress)",
    inputs={
        "request": param("image_request", "a parsed images request (the images APIs)"),
        "prompt": param("text", "what to paint"),
        "negative_prompt": param("text", "what to steer away from (default empty)"),
        "seed": param("int", "first image's seed (default random); fan-out copy i gets seed + i"),
        "n": param("int", "images in this one call (default 1)"),
        "steps": param("int", "denoising steps (server default)"),
        "sampler": param("text", "ddim, euler, dpmpp_2m, unipc, lcm (server default)"),
        "guidance_scale": param("float", "classifier-free guidance (server default)"),
        "width": param("int", "pixels, a multiple of 8 (server default)"),
        "height": param("int", "pixels, a multiple of 8 (server default)"),
        "cache_interval": param("int", "DeepCache interval, 1 = off (server default)"),
    },
    outputs=outputs(image="image", seed="int", images="list[image]", seeds="list[int]"),
    run=run,
    one_of=("request", "prompt"),
)
