"""The shape bounds in `Limits` (messages, content parts per message, prompt characters), at their edges,
through both parsers (OpenAI JSON and gRPC protos) and the shared validation, without Serve."""

from __future__ import annotations

import pytest

from deployments.grpc_chat import chat_request_from_proto
from deployments.grpc_images import image_request_from_proto
from deployments.openai_chat import parse_chat_body
from deployments.openai_images import parse_image_body
from pipelines.chat_request import validate_chat_request
from pipelines.image_request import validate_image_request
from triptych.config import ChatDefaults, ImageDefaults, Limits
from triptych.errors import RequestError
from triptych.v1 import triptych_pb2 as pb

LIMITS = Limits(max_messages=3, max_content_parts=2, max_prompt_chars=10, max_tokens=128)


def http_chat(messages: list[list[str]]):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": t} for t in parts]}
                         for parts in messages]}
    request, _, _ = parse_chat_body(body, ChatDefaults(), LIMITS)
    return request


def grpc_chat(messages: list[list[str]]):
    message = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text=t) for t in parts])
                                       for parts in messages])
    return chat_request_from_proto(message, ChatDefaults())


def error_of(request) -> RequestError:
    with pytest.raises(RequestError) as info:
        validate_chat_request(request, LIMITS)
    return info.value


@pytest.mark.parametrize("parse", [http_chat, grpc_chat], ids=["http", "grpc"])
def test_chat_bounds_at_their_edges(parse):
    validate_chat_request(parse([["a"], ["b"], ["c", "1234567"]]), LIMITS)  # 3 messages, 2 parts, 10 chars
    too_many = error_of(parse([["a"]] * 4))
    assert (too_many.field, too_many.message) == ("messages", "4 messages; at most 3 allowed")
    parts = error_of(parse([["a"], ["a", "b", "c"]]))
    assert (parts.field, parts.message) == ("messages[1].content", "3 content parts; at most 2 allowed")
    chars = error_of(parse([["12345"], ["123456"]]))
    assert (chars.field, chars.message) == ("messages", "11 characters of text; at most 10 allowed")


def test_chat_bounds_come_before_any_image_is_decoded():
    """Too many parts with a broken image among them: the count is the error, not the image."""
    message = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[
        pb.ContentPart(image=b"not an image"), pb.ContentPart(text="a"), pb.ContentPart(text="b")])])
    assert error_of(chat_request_from_proto(message, ChatDefaults())).field == "messages[0].content"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_image_prompts_are_bounded_in_characters_on_both_apis(field):
    defaults = ImageDefaults()
    for parse in (lambda f: parse_image_body({"prompt": "p", **f}, defaults),
                  lambda f: image_request_from_proto(pb.GenerateImageRequest(**{"prompt": "p", **f}), defaults)):
        validate_image_request(parse({field: "x" * 10}), defaults.max_size, max_prompt_chars=10)
        with pytest.raises(RequestError) as info:
            validate_image_request(parse({field: "x" * 11}), defaults.max_size, max_prompt_chars=10)
        assert (info.value.field, info.value.message) == (field, "11 characters; at most 10 allowed")


def test_default_limits_fit_one_full_size_image_as_base64():
    limits = Limits()
    assert limits.max_request_bytes > 4 * -(-limits.max_image_bytes // 3) + 2**20  # base64 + 1 MiB of JSON
