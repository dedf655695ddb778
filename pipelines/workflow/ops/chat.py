"""``chat``: the image-text chat pipeline (vision encoder -> cache -> decoder) as a step.

Takes the parsed ``request`` of the chat APIs, or a ``prompt`` with optional images and sampling
knobs (server defaults for the rest, checked like a chat request). Streams the pipeline's
``TextDelta``s and its final ``ChatUsage`` as progress; outputs the whole text.
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing
from typing import Any

from pipelines.chat_request import ChatRequest, validate_chat_request
from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param
from triptych.types import ChatMessage, ChatUsage, ImagePart, SamplingParams, TextDelta, TextPart


async def chat_request(context: OpContext, args: dict[str, Any]) -> ChatRequest:
    """The step's ChatRequest: the given one (its seed replaced by a fan-out's), or one built here."""
    if "request" in args:
        request = args["request"]
        if "seed" in args:
            request = dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, seed=args["seed"]))
        return request
    defaults = context.chat_defaults
    images = ([args["image"]] if "image" in args else []) + list(args.get("images", ()))
    messages = [ChatMessage("system", (TextPart(args["system"]),))] if "system" in args else []
    messages.append(ChatMessage("user", (*(ImagePart(bytes(image)) for image in images), TextPart(args["prompt"]))))
    request = ChatRequest(
        messages=tuple(messages),
        sampling=SamplingParams(
            max_tokens=args.get("max_tokens", defaults.max_tokens),
            temperature=float(args.get("temperature", defaults.temperature)),
            top_p=float(args.get("top_p", defaults.top_p)),
            seed=args.get("seed"),
        ),
        pruning_method=args.get("pruning_method", defaults.pruning_method),
        visual_token_keep_ratio=float(args.get("visual_token_keep_ratio", defaults.visual_token_keep_ratio)),
    )
    await asyncio.to_thread(validate_chat_request, request, context.limits)  # decodes the images
    return request


async def run(context: OpContext, args: dict[str, Any]):
    pipeline = context.need("chat")
    request = await chat_request(context, args)
    pieces: list[str] = []
    last: TextDelta | None = None
    usage: ChatUsage | None = None
    async with aclosing(pipeline.run(request)) as events:  # closing it stops the decoder's stream
        async for event in events:
            yield event
            if isinstance(event, TextDelta):
                pieces.append(event.text)
                last = event
            else:
                usage = event
    yield OpOutput(
        {"text": "".join(pieces), "finish_reason": (last and last.finish_reason) or "stop",
         "completion_tokens": last.completion_tokens if last else 0},
        cache_hit=usage.cache_hit if usage else None,
    )  # fmt: skip


OP = Operation(
    name="chat",
    description="answer a prompt about zero or more images with the VLM (streams text deltas)",
    inputs={
        "request": param("chat_request", "a parsed chat request (the chat APIs)"),
        "prompt": param("text", "the user's message"),
        "system": param("text", "a system message before it"),
        "image": param("image", "one image the prompt is about"),
        "images": param("list[image]", "images the prompt is about (after `image`)"),
        "max_tokens": param("int", "completion length limit (server default)"),
        "temperature": param("float", "0 = greedy (server default)"),
        "top_p": param("float", "nucleus sampling (server default)"),
        "seed": param("int", "sampling seed; fan-out copy i gets seed + i"),
        "pruning_method": param("text", "visual token pruner (server default)"),
        "visual_token_keep_ratio": param("float", "visual tokens kept per image, in (0, 1]"),
    },
    outputs=outputs(text="text", finish_reason="text", completion_tokens="int"),
    run=run,
    one_of=("request", "prompt"),
)
