"""Edge parsing and validation of chat requests (OpenAI JSON and gRPC protos), without Serve."""

import base64
import io

import pytest
from PIL import Image

from decoders.sampling import check_sampling_params
from deployments.grpc_chat import chat_request_from_proto
from deployments.openai_chat import parse_chat_body
from pipelines.chat_request import validate_chat_request
from triptych.config import ChatDefaults, Limits
from triptych.errors import RequestError
from triptych.v1 import triptych_pb2 as pb

DEFAULTS = ChatDefaults()
LIMITS = Limits(max_images_per_request=2, max_tokens=128)


def png_bytes(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def body(**overrides):
    content = [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
               {"type": "text", "text": "what colour?"}]
    return {"model": "m", "messages": [{"role": "user", "content": content}], **overrides}


def field_of(raw) -> str:
    with pytest.raises(RequestError) as info:
        request, _, _ = parse_chat_body(raw, DEFAULTS, LIMITS)
        validate_chat_request(request, LIMITS)
    return info.value.field


def test_valid_body_parses_images_text_and_knobs():
    request, stream, include_usage = parse_chat_body(
        body(stream=True, stream_options={"include_usage": True}, max_tokens=7, temperature=0.5,
             top_p=0.9, seed=3, pruning_method="cls_attention", visual_token_keep_ratio=0.25), DEFAULTS, LIMITS)
    validate_chat_request(request, LIMITS)
    assert stream and include_usage
    assert len(request.images) == 1 and request.images[0] == png_bytes()
    assert (request.sampling.max_tokens, request.sampling.temperature, request.sampling.top_p,
            request.sampling.seed) == (7, 0.5, 0.9, 3)
    assert (request.pruning_method, request.visual_token_keep_ratio) == ("cls_attention", 0.25)


def test_defaults_apply_when_knobs_are_absent():
    request, stream, include_usage = parse_chat_body(body(), DEFAULTS, LIMITS)
    assert request.sampling.max_tokens == DEFAULTS.max_tokens
    assert request.pruning_method == DEFAULTS.pruning_method
    assert not stream and not include_usage


@pytest.mark.parametrize("raw, field", [
    ([1, 2], "body"),
    ({"messages": []}, "messages"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens=10_000), "max_tokens"),
    (body(max_tokens="ten"), "max_tokens"),
    (body(temperature=-0.1), "temperature"),
    (body(temperature=2.5), "temperature"),
    (body(top_p=0), "top_p"),
    (body(top_p=1.5), "top_p"),
    (body(visual_token_keep_ratio=0), "visual_token_keep_ratio"),
    (body(visual_token_keep_ratio=1.5), "visual_token_keep_ratio"),
    (body(pruning_method="magic"), "pruning_method"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
])
def test_invalid_fields_are_named(raw, field):
    assert field_of(raw) == field


@pytest.mark.parametrize("knobs", [
    {"temperature": 2.5}, {"temperature": -0.1}, {"temperature": float("nan")}, {"top_p": 0},
    {"top_p": 1.01}, {"max_tokens": 0}, {"max_tokens": LIMITS.max_tokens + 1}, {"seed": 2**64},
])
def test_edge_and_engine_give_the_same_answer(knobs):
    """The edge runs the engine's own rule (one rule, one place): same field, same message."""
    request, _, _ = parse_chat_body(body(**knobs), DEFAULTS, LIMITS)
    with pytest.raises(RequestError) as edge:
        validate_chat_request(request, LIMITS)
    with pytest.raises(RequestError) as engine:
        check_sampling_params(request.sampling, max_tokens_limit=LIMITS.max_tokens)
    assert str(edge.value) == str(engine.value)


def test_edge_accepts_both_ends_of_every_range():
    for knobs in ({"temperature": 0, "top_p": 1, "max_tokens": 1},
                  {"temperature": 2, "top_p": 1e-9, "max_tokens": LIMITS.max_tokens}):
        request, _, _ = parse_chat_body(body(**knobs), DEFAULTS, LIMITS)
        validate_chat_request(request, LIMITS)


def test_configured_max_image_bytes_applies_to_data_urls():
    png = png_bytes()
    raw = body()
    parse_chat_body(raw, DEFAULTS, Limits(max_image_bytes=len(png)))  # just inside
    with pytest.raises(RequestError) as info:
        parse_chat_body(raw, DEFAULTS, Limits(max_image_bytes=len(png) - 1))
    assert info.value.field == "messages[0].content[0].image_url.url"
    assert f"is {len(png)} bytes; at most {len(png) - 1} bytes allowed" in info.value.message


def test_grpc_nan_temperature_is_rejected():
    message = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="hi")])],
                             temperature=float("nan"))
    with pytest.raises(RequestError, match="temperature: nan is outside 0..2"):
        validate_chat_request(chat_request_from_proto(message, DEFAULTS), LIMITS)


@pytest.mark.parametrize("url, expected", [
    ("https://example.com/cat.png", "remote"),
    ("data:image/png;base64,@@@notbase64", "base64"),
    ("data:image/png;base64," + base64.b64encode(b"hello, not an image").decode(), "image"),
    (data_url(png_bytes((64, 64))[:-20]), "truncat"),
])
def test_bad_images_are_rejected_naming_the_part(url, expected):
    raw = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(RequestError) as info:
        request, _, _ = parse_chat_body(raw, DEFAULTS, LIMITS)
        validate_chat_request(request, LIMITS)
    assert info.value.field.startswith("messages[0].content[0]")
    assert expected in info.value.message.lower()


def test_too_many_images():
    part = {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}
    raw = {"messages": [{"role": "user", "content": [part, part, part, {"type": "text", "text": "x"}]}]}
    assert field_of(raw) == "messages"


def test_decompression_bomb_rejected():
    raw = body()
    raw["messages"][0]["content"][0]["image_url"]["url"] = data_url(png_bytes((3000, 3000)))
    limits = Limits(max_image_pixels=1_000_000)
    request, _, _ = parse_chat_body(raw, DEFAULTS, LIMITS)
    with pytest.raises(RequestError) as info:
        validate_chat_request(request, limits)
    assert info.value.field == "messages[0].content[0]"


def test_grpc_proto_converts_with_optional_fields():
    message = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[
        pb.ContentPart(image=png_bytes()), pb.ContentPart(text="hi")])], max_tokens=5, visual_token_keep_ratio=0.5)
    request = chat_request_from_proto(message, DEFAULTS)
    validate_chat_request(request, LIMITS)
    assert request.sampling.max_tokens == 5 and request.sampling.temperature == DEFAULTS.temperature
    assert request.visual_token_keep_ratio == 0.5 and request.images == [png_bytes()]


def test_grpc_empty_content_part_is_named():
    message = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart()])])
    with pytest.raises(RequestError) as info:
        chat_request_from_proto(message, DEFAULTS)
    assert info.value.field == "messages[0].content[0]"
