"""OpenAI-compatible images: `/v1/images/generations` JSON body -> ImageRequest, result -> JSON, and the
`"stream": true` extension: an SSE stream of progress events, then the result body, then `[DONE]`."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from denoisers.params import draw_seed
from deployments.json_fields import number_field, string_field
from deployments.openai_chat import error_body
from pipelines.image_request import ImageRequest
from triptych.config import ImageDefaults
from triptych.errors import RequestError
from triptych.types import ImageParams, ImageProgress, ImageResult

logger = logging.getLogger("triptych.images")


def parse_image_body(body: Any, defaults: ImageDefaults) -> ImageRequest:
    """Raises RequestError naming the bad field. Extension fields: steps, sampler, guidance_scale,
    seed, negative_prompt, cache_interval."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    response_format = string_field(body.get("response_format"), "response_format", "b64_json")
    if response_format != "b64_json":
        raise RequestError("response_format", f"{response_format!r} is not supported; use 'b64_json' "
                           "(images are returned inline, never stored behind a URL)")
    width, height = parse_size(body.get("size"), defaults)
    seed = number_field(body.get("seed"), "seed", int, None)
    return ImageRequest(
        prompt=string_field(body.get("prompt"), "prompt", None),
        negative_prompt=string_field(body.get("negative_prompt"), "negative_prompt", ""),
        params=ImageParams(
            width=width,
            height=height,
            steps=number_field(body.get("steps"), "steps", int, defaults.steps),
            sampler=string_field(body.get("sampler"), "sampler", defaults.sampler),
            guidance_scale=number_field(body.get("guidance_scale"), "guidance_scale", float,
                                        defaults.guidance_scale),
            seed=draw_seed() if seed is None else seed,
            n=number_field(body.get("n"), "n", int, 1),
            cache_interval=number_field(body.get("cache_interval"), "cache_interval", int,
                                        defaults.cache_interval),
        ),
    )


def parse_size(value: Any, defaults: ImageDefaults) -> tuple[int, int]:
    if value is None or value == "auto":
        return defaults.width, defaults.height
    if not isinstance(value, str):
        raise RequestError("size", "must be a string like '64x64'")
    width, sep, height = value.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise RequestError("size", f"{value!r} is not WIDTHxHEIGHT, e.g. '64x64'")
    return int(width), int(height)


def images_body(result: ImageResult) -> dict:
    return {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(png).decode(), "seed": seed}
                 for png, seed in zip(result.pngs, result.seeds)],
        "cache_hit": result.cache_hit,
        "timings_ms": result.timings_ms,
    }


def image_stream_requested(body: dict) -> bool:
    """The `stream` extension field: absent or false = the OpenAI JSON body, true = SSE."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", "must be a boolean")
    return stream


async def images_sse(first: ImageProgress | ImageResult, events: AsyncGenerator) -> AsyncIterator[str]:
    """SSE for `"stream": true`: one ``image_generation.progress`` event per denoising step
    (``step``, ``total_steps``, ``elapsed_ms``), then the result (the non-stream body, unchanged), then
    ``data: [DONE]``. `first` is the workflow's first event (taken before the response started, so bad
    requests got a 400); a failure after it is an in-band ``{"error": ...}`` event.

    A client that goes away cancels the response task inside this generator's wait for the next event;
    the cancellation unwinds the workflow down to the denoiser's stream, which cancels the remote loop.
    `events` is closed here on every exit so nothing waits for the garbage collector to do it."""
    try:
        event = first
        while True:
            if isinstance(event, ImageResult):
                yield sse_data(images_body(event))
            else:
                yield sse_data({"type": "image_generation.progress", "step": event.step,
                                "total_steps": event.total_steps, "elapsed_ms": event.elapsed_ms})
            event = await anext(events, None)
            if event is None:
                break
    except Exception as exc:  # headers are sent: report in-band, then end the stream
        logger.exception("image stream failed")
        yield sse_data(error_body(str(exc), None, "server_error"))
    finally:
        await events.aclose()
    yield "data: [DONE]\n\n"


def sse_data(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
