"""The bad-input corpus: one table of cases, each sent over HTTP and over gRPC by tests/test_bad_inputs.py,
and printed as the README's table by ``python -m tests.bad_inputs``, so the two cannot drift apart.

``python -m tests.bad_inputs`` prints the block to paste into README.md (between its markers).

A case holds the input for each API (None: the API cannot express it, and `why` says so), the HTTP status
and `param` expected, and the gRPC code and the field its details start with. Inputs are built on demand
(some are tens of MiB). Limits are the defaults (`triptych.config.Limits`), as on the session server.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.serving import data_url, image_bytes
from triptych.config import Limits
from triptych.v1 import triptych_pb2 as pb

LIMITS = Limits()
CHAT, IMAGES, EDGE = "/v1/chat/completions", "/v1/images/generations", "edge"
PARAM = "messages[0].content[0]"  # the first part of the first message: where the images below go


@dataclass(frozen=True)
class Case:
    api: str  # "chat", "images" or "edge" (not one endpoint's fields)
    what: str  # the input, as the README table shows it
    http: Callable[[], dict | bytes] | None  # the JSON body (bytes: sent as they are)
    status: int | None  # HTTP status expected
    param: str | None  # HTTP error.param expected
    grpc: Callable[[], pb.ChatRequest | pb.GenerateImageRequest] | None
    code: str | None  # gRPC status code name expected
    field: str | None  # the gRPC details start with "<field>: "
    why: str = ""  # why one API has no such input
    path: str | None = None  # HTTP path when not the api's endpoint
    method: str = "POST"
    raw: str | None = None  # "content-length" / "chunked": sent over a plain socket (tests/raw_http.py)


# ---- inputs ------------------------------------------------------------------------------------


def png_over_4_mb() -> bytes:
    """A valid PNG of 1400x1400 noise (~5.9 MB): over gRPC's default 4 MiB message, under every limit."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(1400, 1400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def bomb() -> bytes:
    return image_bytes((0, 0, 0), size=(2100, 2100))  # 4.41 MP > the 4 MP limit


def truncated() -> bytes:
    return image_bytes((5, 5, 5), (64, 64))[:-30]


def bmp() -> bytes:
    return image_bytes((1, 1, 1), fmt="BMP")


def http_chat(content: list | str | None = None, **fields) -> Callable[[], dict]:
    def body() -> dict:
        parts = [{"type": "text", "text": "q"}] if content is None else content() if callable(content) else content
        return {"messages": [{"role": "user", "content": parts}], "max_tokens": 2, **fields}
    return body


def http_image_part(data: Callable[[], bytes]) -> Callable[[], list]:
    return lambda: [{"type": "image_url", "image_url": {"url": data_url(data())}}, {"type": "text", "text": "q"}]


def grpc_chat(parts: Callable[[], list] | None = None, role: str = "user", **fields) -> Callable[[], pb.ChatRequest]:
    def message() -> pb.ChatRequest:
        content = parts() if parts else [pb.ContentPart(text="q")]
        return pb.ChatRequest(messages=[pb.ChatMessage(role=role, content=content)], **{"max_tokens": 2, **fields})
    return message


def grpc_image_part(data: Callable[[], bytes]) -> Callable[[], list]:
    return lambda: [pb.ContentPart(image=data()), pb.ContentPart(text="q")]


def http_image(**fields) -> Callable[[], dict]:
    return lambda: {"prompt": "a red circle", "steps": 1, "size": "16x16", **fields}


def grpc_image(**fields) -> Callable[[], pb.GenerateImageRequest]:
    return lambda: pb.GenerateImageRequest(**{"prompt": "a red circle", "steps": 1, "width": 16, "height": 16,
                                              **fields})


def raw(text: str) -> Callable[[], bytes]:
    return lambda: text.encode()


def many_messages(count: int, proto: bool):
    if proto:
        return lambda: pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="q")])]
                                      * count, max_tokens=2)
    return lambda: {"messages": [{"role": "user", "content": "q"}] * count, "max_tokens": 2}


ONE_OVER_IMAGE_BYTES = 4 * (LIMITS.max_image_bytes // 3 + 1)  # base64 characters decoding to limit + 1..3 bytes
LONG_TEXT = "x" * (LIMITS.max_prompt_chars + 1)
URL_NOTE = "gRPC sends image bytes, not URLs"
JSON_NOTE = "a proto field has one type"
STREAM_NOTE = "every gRPC call streams: see the plain case"


def _chat_cases() -> list[Case]:
    text = [{"type": "text", "text": "q"}]
    return [
        Case("chat", "`messages` empty", lambda: {"messages": []}, 400, "messages",
             lambda: pb.ChatRequest(), "INVALID_ARGUMENT", "messages"),
        Case("chat", "`messages` not a list", lambda: {"messages": "hi"}, 400, "messages",
             None, None, None, JSON_NOTE),
        Case("chat", "a message that is not an object", lambda: {"messages": ["hi"]}, 400, "messages[0]",
             None, None, None, JSON_NOTE),
        Case("chat", "role `robot`", lambda: {"messages": [{"role": "robot", "content": "q"}]}, 400,
             "messages[0].role", grpc_chat(role="robot"), "INVALID_ARGUMENT", "messages[0].role"),
        Case("chat", "a message with no content parts", http_chat([]), 400, "messages[0].content",
             grpc_chat(list), "INVALID_ARGUMENT", "messages[0].content"),
        Case("chat", "a content part of unknown type (`audio` / neither text nor image)",
             http_chat([{"type": "audio"}]), 400, "messages[0].content[0].type",
             grpc_chat(lambda: [pb.ContentPart()]), "INVALID_ARGUMENT", PARAM),
        Case("chat", "`text` not a string", http_chat([{"type": "text", "text": 5}]), 400,
             "messages[0].content[0].text", None, None, None, JSON_NOTE),
        Case("chat", "an image that is not an image (plain text)", http_chat(http_image_part(lambda: b"plain text")),
             400, PARAM, grpc_chat(grpc_image_part(lambda: b"plain text")), "INVALID_ARGUMENT", PARAM),
        Case("chat", "a truncated PNG", http_chat(http_image_part(truncated)), 400, PARAM,
             grpc_chat(grpc_image_part(truncated)), "INVALID_ARGUMENT", PARAM),
        Case("chat", "a decompression bomb (2100x2100 header, > `max_image_pixels`)",
             http_chat(http_image_part(bomb)), 400, PARAM, grpc_chat(grpc_image_part(bomb)), "INVALID_ARGUMENT", PARAM),
        Case("chat", "a BMP (format not allowed)", http_chat(http_image_part(bmp)), 400, PARAM,
             grpc_chat(grpc_image_part(bmp)), "INVALID_ARGUMENT", PARAM),
        Case("chat", "an image of `max_image_bytes` + 1 (20 MiB; data URL / raw bytes)",
             http_chat(lambda: [{"type": "image_url", "image_url": {
                 "url": "data:image/png;base64," + "A" * ONE_OVER_IMAGE_BYTES}}, *text]),
             400, f"{PARAM}.image_url.url",
             grpc_chat(grpc_image_part(lambda: b"\x89PNG" + bytes(LIMITS.max_image_bytes - 3))), "INVALID_ARGUMENT",
             PARAM),
        Case("chat", "a valid 5.9 MB PNG (over gRPC's default 4 MiB message): served",
             http_chat(http_image_part(png_over_4_mb)), 200, None, grpc_chat(grpc_image_part(png_over_4_mb)),
             "OK", None),
        Case("chat", "malformed base64 in the data URL",
             http_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}, *text]),
             400, f"{PARAM}.image_url.url", None, None, None, URL_NOTE),
        Case("chat", "a remote `https://` image URL",
             http_chat([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, *text]),
             400, f"{PARAM}.image_url.url", None, None, None, URL_NOTE),
        Case("chat", "`image_url.url` not a string",
             http_chat([{"type": "image_url", "image_url": {"url": 5}}, *text]), 400, f"{PARAM}.image_url.url",
             None, None, None, JSON_NOTE),
        Case("chat", f"{LIMITS.max_images_per_request + 1} images (> `max_images_per_request`)",
             http_chat(lambda: http_image_part(lambda: image_bytes((9, 9, 9)))()[:1] * 5), 400, "messages",
             grpc_chat(lambda: [pb.ContentPart(image=image_bytes((9, 9, 9)))] * 5), "INVALID_ARGUMENT", "messages"),
        Case("chat", f"{LIMITS.max_messages + 1} messages (> `max_messages`)",
             many_messages(LIMITS.max_messages + 1, False), 400, "messages",
             many_messages(LIMITS.max_messages + 1, True), "INVALID_ARGUMENT", "messages"),
        Case("chat", f"{LIMITS.max_content_parts + 1} content parts in a message (> `max_content_parts`)",
             http_chat(text * (LIMITS.max_content_parts + 1)), 400, "messages[0].content",
             grpc_chat(lambda: [pb.ContentPart(text="q")] * (LIMITS.max_content_parts + 1)), "INVALID_ARGUMENT",
             "messages[0].content"),
        Case("chat", f"{LIMITS.max_prompt_chars + 1:,} characters of text (> `max_prompt_chars`)",
             http_chat(LONG_TEXT), 400, "messages",
             grpc_chat(lambda: [pb.ContentPart(text=LONG_TEXT)]), "INVALID_ARGUMENT", "messages"),
        Case("chat", "a prompt past the model's context (3,000 words)", http_chat("word " * 3000), 400, "messages",
             grpc_chat(lambda: [pb.ContentPart(text="word " * 3000)]), "INVALID_ARGUMENT", "messages"),
        Case("chat", "`max_tokens` 0", http_chat(max_tokens=0), 400, "max_tokens",
             grpc_chat(max_tokens=0), "INVALID_ARGUMENT", "max_tokens"),
        Case("chat", f"`max_tokens` {LIMITS.max_tokens + 1}", http_chat(max_tokens=LIMITS.max_tokens + 1), 400,
             "max_tokens", grpc_chat(max_tokens=LIMITS.max_tokens + 1), "INVALID_ARGUMENT", "max_tokens"),
        Case("chat", '`max_tokens` "many"', http_chat(max_tokens="many"), 400, "max_tokens",
             None, None, None, JSON_NOTE),
        Case("chat", "`temperature` 2.5", http_chat(temperature=2.5), 400, "temperature",
             grpc_chat(temperature=2.5), "INVALID_ARGUMENT", "temperature"),
        Case("chat", "`temperature` NaN", raw('{"messages": [{"role": "user", "content": "q"}], "temperature": NaN}'),
             400, "temperature", grpc_chat(temperature=float("nan")), "INVALID_ARGUMENT", "temperature"),
        Case("chat", "`top_p` 0", http_chat(top_p=0), 400, "top_p", grpc_chat(top_p=0.0), "INVALID_ARGUMENT", "top_p"),
        Case("chat", "`seed` 2\\*\\*64", http_chat(seed=2**64), 400, "seed", None, None, None,
             "gRPC's int64 cannot hold it"),
        Case("chat", "`visual_token_keep_ratio` 0", http_chat(visual_token_keep_ratio=0), 400,
             "visual_token_keep_ratio", grpc_chat(visual_token_keep_ratio=0.0), "INVALID_ARGUMENT",
             "visual_token_keep_ratio"),
        Case("chat", "`visual_token_count` 0", http_chat(visual_token_count=0), 400, "visual_token_count",
             grpc_chat(visual_token_count=0), "INVALID_ARGUMENT", "visual_token_count"),
        Case("chat", "unknown `pruning_method`", http_chat(pruning_method="nope"), 400, "pruning_method",
             grpc_chat(pruning_method="nope"), "INVALID_ARGUMENT", "pruning_method"),
        Case("chat", "unknown `model`", http_chat(model="gpt-17"), 400, "model",
             grpc_chat(model="gpt-17"), "INVALID_ARGUMENT", "model"),
        Case("chat", '`stream` "yes"', http_chat(stream="yes"), 400, "stream", None, None, None, JSON_NOTE),
        Case("chat", "`stream: true` with `max_tokens` 0 (an error, not an event stream)",
             http_chat(stream=True, max_tokens=0), 400, "max_tokens", None, None, None, STREAM_NOTE),
        Case("chat", "a body that is not JSON", raw("{not json"), 400, "body", None, None, None, "no JSON in gRPC"),
        Case("chat", "a JSON array as the body", raw("[1, 2]"), 400, "body", None, None, None, "no JSON in gRPC"),
    ]


def _image_cases() -> list[Case]:
    invalid = "INVALID_ARGUMENT"
    return [
        Case("images", "empty `prompt`", http_image(prompt=""), 400, "prompt", grpc_image(prompt=""), invalid, "prompt"),
        Case("images", "a prompt longer than the text encoder takes (200 words)", http_image(prompt="word " * 200),
             400, "prompt", grpc_image(prompt="word " * 200), invalid, "prompt"),
        Case("images", f"a prompt of {LIMITS.max_prompt_chars + 1:,} characters (> `max_prompt_chars`)",
             http_image(prompt=LONG_TEXT), 400, "prompt", grpc_image(prompt=LONG_TEXT), invalid, "prompt"),
        Case("images", f"a negative prompt of {LIMITS.max_prompt_chars + 1:,} characters",
             http_image(negative_prompt=LONG_TEXT), 400, "negative_prompt", grpc_image(negative_prompt=LONG_TEXT),
             invalid, "negative_prompt"),
        Case("images", "`steps` 0", http_image(steps=0), 400, "steps", grpc_image(steps=0), invalid, "steps"),
        Case("images", "`steps` 151", http_image(steps=151), 400, "steps", grpc_image(steps=151), invalid, "steps"),
        Case("images", "`steps` 2.5", http_image(steps=2.5), 400, "steps", None, None, None, JSON_NOTE),
        Case("images", "`steps` 51 with sampler `lcm` (its maximum is 50)", http_image(steps=51, sampler="lcm"),
             400, "steps", grpc_image(steps=51, sampler="lcm"), invalid, "steps"),
        Case("images", "unknown `sampler`", http_image(sampler="magic"), 400, "sampler",
             grpc_image(sampler="magic"), invalid, "sampler"),
        Case("images", "`size` 60x64 (not a multiple of 8)", http_image(size="60x64"), 400, "size",
             grpc_image(width=60, height=64), invalid, "size"),
        Case("images", "`size` 1024x1024 (> `images.max_size`)", http_image(size="1024x1024"), 400, "size",
             grpc_image(width=1024, height=1024), invalid, "size"),
        Case("images", '`size` "big"', http_image(size="big"), 400, "size", None, None, None,
             "gRPC has integer width and height"),
        Case("images", "`n` 0", http_image(n=0), 400, "n", grpc_image(n=0), invalid, "n"),
        Case("images", "`n` 9", http_image(n=9), 400, "n", grpc_image(n=9), invalid, "n"),
        Case("images", "`guidance_scale` -1", http_image(guidance_scale=-1), 400, "guidance_scale",
             grpc_image(guidance_scale=-1.0), invalid, "guidance_scale"),
        Case("images", "`guidance_scale` NaN", raw('{"prompt": "x", "steps": 1, "guidance_scale": NaN}'), 400,
             "guidance_scale", grpc_image(guidance_scale=float("nan")), invalid, "guidance_scale"),
        Case("images", "`seed` -1", http_image(seed=-1), 400, "seed", grpc_image(seed=-1), invalid, "seed"),
        Case("images", "`cache_interval` 0", http_image(cache_interval=0), 400, "cache_interval",
             grpc_image(cache_interval=0), invalid, "cache_interval"),
        Case("images", '`response_format` "url"', http_image(response_format="url"), 400, "response_format",
             None, None, None, "gRPC returns PNG bytes"),
        Case("images", "unknown `model`", http_image(model="dall-e-9"), 400, "model", None, None, None,
             "GenerateImageRequest has no model"),
        Case("images", "`stream: true` with `steps` 0 (an error, not an event stream)",
             http_image(stream=True, steps=0), 400, "steps", None, None, None, STREAM_NOTE),
    ]


def _edge_cases() -> list[Case]:
    over = LIMITS.max_request_bytes + 1
    return [
        Case(EDGE, "an unknown path (`GET /v1/nothing`)", None, 404, None, None, None, None,
             "gRPC answers an unknown method UNIMPLEMENTED itself", path="/v1/nothing", method="GET"),
        Case(EDGE, "a wrong method (`GET /v1/chat/completions`)", None, 405, None, None, None, None,
             "gRPC has no methods per path", path=CHAT, method="GET"),
        Case(EDGE, f"a body of `max_request_bytes` + 1 ({over:,} bytes, `Content-Length`)", None, 413, None,
             grpc_chat(grpc_image_part(lambda: bytes(over))), "RESOURCE_EXHAUSTED", None, path=CHAT,
             raw="content-length"),
        Case(EDGE, "a chunked body past `max_request_bytes` (no length given)", None, 413, None, None, None, None,
             "gRPC messages carry their length", path=IMAGES, raw="chunked"),
    ]


CASES: list[Case] = [*_chat_cases(), *_image_cases(), *_edge_cases()]


def http_cell(case: Case) -> str:
    if case.status is None:
        return "—"
    if case.status == 200:
        return "200 (served)"
    codes = {404: "unknown_url", 405: "method_not_allowed", 413: "request_too_large"}
    return f"{case.status} `{case.param}`" if case.param else f"{case.status} `{codes[case.status]}`"


def grpc_cell(case: Case) -> str:
    if case.code is None:
        return f"— ({case.why})"
    if case.code == "OK":
        return "OK (served)"
    return f"{case.code} `{case.field}`" if case.field else case.code


def markdown_table() -> str:
    rows = ["| API | input | HTTP (status, `param`) | gRPC (code, field) |", "|---|---|---|---|"]
    rows += [f"| {c.api} | {c.what} | {http_cell(c)} | {grpc_cell(c)} |" for c in CASES]
    return "\n".join(rows)


def readme_block() -> str:
    """The table between the markers README.md keeps it in (tests/test_bad_inputs.py compares the two)."""
    return f"{README_BEGIN}\n{markdown_table()}\n{README_END}"


README_BEGIN = "<!-- bad-inputs table: generated by `python -m tests.bad_inputs`; do not edit by hand -->"
README_END = "<!-- end of bad-inputs table -->"

if __name__ == "__main__":
    print(readme_block())
