"""End to end: Ray Serve with VisionEncoder, LLMDecoder and the ingress, over HTTP (official
`openai` client) and gRPC, on the `tiny` profile with an embedded Redis (the `server` fixture in
conftest.py starts it once per test session)."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from tests.serving import data_url, image_bytes, user_message
from triptych.v1 import triptych_pb2 as pb


def images_encoded(server) -> int:
    return server.deployment_handle("VisionEncoder").stats.remote().result()["images_encoded"]


def grpc_chat(client, question, images, **options):
    messages = list(client.chat(question, images, **options))
    return "".join(m.delta for m in messages), messages[-1]


def test_models_and_health(server, openai_client, grpc_client):
    assert [m.id for m in openai_client.models.list()] == [server.chat_model_path.name, server.image_model_path.name,
                                                           server.embedding_model_path.name]
    assert httpx.get(f"{server.http_url}/healthz").json() == {"status": "ok"}
    assert grpc_client.health() == "SERVING"


def test_openai_stream_matches_non_stream_and_reports_usage(server, openai_client):
    image = image_bytes((10, 200, 30))
    kwargs = {"model": server.chat_model_path.name, "messages": [user_message("what colour?", image)],
              "max_tokens": 12, "temperature": 0}
    full = openai_client.chat.completions.create(**kwargs)
    chunks = list(openai_client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert full.choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == full.usage.completion_tokens > 0
    assert usage.prompt_tokens == full.usage.prompt_tokens
    # the server default prunes: cls_attention keeping half the visual tokens (ChatDefaults)
    assert full.usage.visual_tokens_kept == -(-full.usage.visual_tokens_in // 2) > 0
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens
    assert {"prefill", "decode"} <= set(full.usage.timings_ms)
    assert full.usage.cache_hit is False and usage.cache_hit is True  # second call: same image


def test_grpc_stream_equals_http_answer(server, openai_client, grpc_client):
    image = image_bytes((250, 120, 0))
    text, last = grpc_chat(grpc_client, "describe", [image], max_tokens=10)
    http = openai_client.chat.completions.create(
        model=server.chat_model_path.name, messages=[user_message("describe", image)], max_tokens=10)
    assert text == http.choices[0].message.content
    assert last.finish_reason in ("stop", "length")
    assert last.usage.completion_tokens > 0 and last.usage.visual_tokens_in > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_cache_hit_skips_the_encoder(server, grpc_client):
    image = image_bytes((1, 2, 3))
    before = images_encoded(server)
    _, first = grpc_chat(grpc_client, "what is it?", [image], max_tokens=4)
    after_first = images_encoded(server)
    _, second = grpc_chat(grpc_client, "what is it?", [image], max_tokens=4)
    assert (first.usage.cache_hit, second.usage.cache_hit) == (False, True)
    assert after_first == before + 1
    assert images_encoded(server) == after_first  # the hit never called the encoder
    assert "encode" in first.usage.timings_ms and "encode" not in second.usage.timings_ms


def test_concurrent_requests_for_a_new_image_encode_it_once(server):
    image = image_bytes((77, 88, 99))
    before = images_encoded(server)
    payload = {"model": server.chat_model_path.name, "messages": [user_message("hi", image)], "max_tokens": 3}

    async def fire():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{server.http_url}/v1/chat/completions", json=payload)
                                          for _ in range(3)))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert images_encoded(server) == before + 1


def _bomb_png() -> bytes:
    return image_bytes((0, 0, 0), size=(2100, 2100))  # 4.4 MP > the 4 MP default limit


BAD_HTTP_BODIES = [
    ("not an image", [{"type": "image_url", "image_url": {"url": data_url(b"plain text")}}],
     "messages[0].content[0]"),
    ("truncated", [{"type": "image_url", "image_url": {"url": data_url(image_bytes((5, 5, 5), (64, 64))[:-30])}}],
     "messages[0].content[0]"),
    ("bomb", [{"type": "image_url", "image_url": {"url": data_url(_bomb_png())}}], "messages[0].content[0]"),
    ("bmp", [{"type": "image_url", "image_url": {"url": data_url(image_bytes((1, 1, 1), fmt="BMP"))}}],
     "messages[0].content[0]"),
    ("bad base64", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
     "messages[0].content[0].image_url.url"),
    ("remote url", [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
     "messages[0].content[0].image_url.url"),
    ("too many images", [{"type": "image_url", "image_url": {"url": data_url(image_bytes((9, 9, 9)))}}] * 5,
     "messages"),
]


@pytest.mark.parametrize("case, content, field", BAD_HTTP_BODIES, ids=[c[0] for c in BAD_HTTP_BODIES])
def test_bad_images_get_400_naming_the_field(server, case, content, field):
    body = {"model": server.chat_model_path.name,
            "messages": [{"role": "user", "content": [*content, {"type": "text", "text": "q"}]}]}
    response = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize("overrides, field", [
    ({"messages": []}, "messages"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 100_000}, "max_tokens"),
    ({"temperature": 9}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"visual_token_keep_ratio": 0}, "visual_token_keep_ratio"),
    ({"pruning_method": "nope"}, "pruning_method"),
    ({"model": "gpt-17"}, "model"),
    ({"messages": [{"role": "user", "content": "word " * 3000}]}, "messages"),  # past the context
])
def test_bad_fields_get_400_and_server_keeps_serving(server, openai_client, overrides, field):
    body = {"model": server.chat_model_path.name, "messages": [user_message("q", image_bytes((3, 3, 3)))],
            **overrides}
    response = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    ok = openai_client.chat.completions.create(
        model=server.chat_model_path.name, messages=[user_message("q")], max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_body_not_json_gets_400(server):
    response = httpx.post(f"{server.http_url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"


def post_chat(server, raw: str) -> httpx.Response:
    """POST a raw JSON text (so NaN / Infinity literals, which Python's json accepts, reach the server)."""
    return httpx.post(f"{server.http_url}/v1/chat/completions", content=raw.encode(),
                      headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize("knob, value, message", [
    ("temperature", "2.5", "2.5 is outside 0..2"),
    ("temperature", "2.0000001", "2.0000001 is outside 0..2"),
    ("temperature", "-0.001", "-0.001 is outside 0..2"),
    ("temperature", "NaN", "nan is outside 0..2"),
    ("temperature", "Infinity", "inf is outside 0..2"),
    ("temperature", '"hot"', "must be a number, got str"),
    ("top_p", "0", "0.0 is outside (0, 1]"),
    ("top_p", "1.0000001", "1.0000001 is outside (0, 1]"),
    ("top_p", "-Infinity", "-inf is outside (0, 1]"),
    ("max_tokens", "1025", "1025 is outside 1..1024"),
    ("seed", "18446744073709551616", "18446744073709551616 is outside -2**63..2**64-1"),
])
def test_sampling_just_outside_gets_400_stating_the_rule(server, knob, value, message):
    response = post_chat(server, f'{{"messages": [{{"role": "user", "content": "q"}}], "{knob}": {value}}}')
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == knob
    assert response.json()["error"]["message"] == message


def test_sampling_at_both_ends_is_served(server):
    for knobs in ('"temperature": 0, "top_p": 1, "max_tokens": 1',
                  '"temperature": 2, "top_p": 1e-9, "max_tokens": 1, "seed": 18446744073709551615'):
        response = post_chat(server, f'{{"messages": [{{"role": "user", "content": "q"}}], {knobs}}}')
        assert response.status_code == 200, response.text


def test_data_url_one_byte_over_max_image_bytes_gets_400(server):
    limit = server.config.limits.max_image_bytes
    url = "data:image/png;base64," + "A" * (4 * (limit // 3 + 1))  # decodes to limit + 1..3 bytes
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    response = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[0].image_url.url"
    assert f"at most {limit} bytes allowed" in error["message"]


def test_context_boundary_is_checked_before_any_image_is_encoded(server):
    """prompt + max_tokens == context is served; one more is a 400 on `messages`, and the new image
    in that request is never encoded (the edge checks the context before any stage runs)."""
    def ask(color, max_tokens):
        body = {"messages": [user_message("q", image_bytes(color))], "max_tokens": max_tokens}
        return httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=120)

    context = server.deployment_handle("LLMDecoder").info.remote().result().context_length
    prompt_tokens = ask((11, 12, 13), 1).json()["usage"]["prompt_tokens"]  # same size for every image
    before = images_encoded(server)
    over = ask((14, 15, 16), context - prompt_tokens + 1)
    assert over.status_code == 400 and over.json()["error"]["param"] == "messages", over.text
    assert f"exceed the context of {context} tokens" in over.json()["error"]["message"]
    assert images_encoded(server) == before
    assert ask((14, 15, 16), context - prompt_tokens).status_code == 200


@pytest.mark.parametrize("options, images, field", [
    ({"max_tokens": 0}, [], "max_tokens"),
    ({"top_p": 2.0}, [], "top_p"),
    ({"pruning_method": "nope"}, [], "pruning_method"),
    ({}, [b"\x89PNG\r\n\x1a\n broken"], "messages[0].content[0]"),
])
def test_grpc_bad_input_is_invalid_argument(grpc_client, options, images, field):
    with pytest.raises(grpc.RpcError) as info:
        list(grpc_client.chat("q", images, **options))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)
    _, last = grpc_chat(grpc_client, "still there?", [], max_tokens=2)
    assert last.finish_reason in ("stop", "length")


def test_grpc_empty_request_is_invalid_argument(grpc_client):
    with pytest.raises(grpc.RpcError) as info:
        list(grpc_client.chat_request(pb.ChatRequest()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_overload_is_rejected_fast_then_recovers(server, grpc_client):
    payload = {"model": server.chat_model_path.name, "messages": [user_message("go")], "max_tokens": 400,
               "stream": True}

    async def fire(n: int):
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{server.http_url}/v1/chat/completions", json=payload)
                                          for _ in range(n)))

    statuses = sorted(r.status_code for r in asyncio.run(fire(24)))
    assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
    _, last = grpc_chat(grpc_client, "after the storm", [], max_tokens=2)
    assert last.finish_reason in ("stop", "length")


def test_a_full_decoder_engine_is_503_and_resource_exhausted_then_recovers(server):
    """4 long chats at once reach a decoder engine holding 3 (conftest): the one past it is refused by
    the engine itself (503 over HTTP, RESOURCE_EXHAUSTED over gRPC), the others finish."""
    payload = {"model": server.chat_model_path.name, "messages": [user_message("go")], "max_tokens": 400,
               "stream": True, "temperature": 0}

    async def http_and_grpc():
        async def grpc_call():
            async with grpc.aio.insecure_channel(server.grpc_target) as channel:
                call = channel.unary_stream("/triptych.v1.Triptych/Chat",
                                            request_serializer=pb.ChatRequest.SerializeToString,
                                            response_deserializer=pb.ChatResponse.FromString)
                try:
                    async for _ in call(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[
                            pb.ContentPart(text="go")])], max_tokens=400)):
                        pass
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details()
                return grpc.StatusCode.OK, ""

        async with httpx.AsyncClient(timeout=120) as client:
            async def http_call():
                async with client.stream("POST", f"{server.http_url}/v1/chat/completions", json=payload) as r:
                    return r.status_code, (await r.aread()).decode()

            return await asyncio.gather(http_call(), http_call(), http_call(), grpc_call())

    results = asyncio.run(http_and_grpc())
    refused = [r for r in results if r[0] in (503, grpc.StatusCode.RESOURCE_EXHAUSTED)]
    served = [r for r in results if r[0] in (200, grpc.StatusCode.OK)]
    assert len(refused) >= 1 and len(served) >= 2 and len(refused) + len(served) == 4, results
    assert any("max_waiting" in detail for _, detail in refused), refused  # the engine said no, not Serve
    assert server.deployment_handle("LLMDecoder").stats.remote().result()["running"] == 0


def test_stream_sse_ends_with_done(server):
    payload = {"model": server.chat_model_path.name, "messages": [user_message("x")], "max_tokens": 3,
               "stream": True}
    with httpx.stream("POST", f"{server.http_url}/v1/chat/completions", json=payload, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("method", ["cls_attention", "visionzip", "tome", "divprune"])
def test_pruning_methods_through_http_report_kept_tokens(server, openai_client, method):
    response = openai_client.chat.completions.create(
        model=server.chat_model_path.name, messages=[user_message("what?", image_bytes((40, 50, 60)))],
        max_tokens=3, extra_body={"pruning_method": method, "visual_token_keep_ratio": 0.25})
    usage = response.usage
    assert usage.visual_tokens_kept == -(-usage.visual_tokens_in // 4)  # ceil(N / 4)
    assert usage.visual_tokens_kept < usage.visual_tokens_in


def test_keep_ratio_one_equals_no_pruning(server, openai_client):
    image = image_bytes((90, 10, 200))
    answers = []
    for extra in ({"pruning_method": "none"}, {"pruning_method": "cls_attention", "visual_token_keep_ratio": 1.0},
                  {"pruning_method": "tome", "visual_token_keep_ratio": 1.0}):
        response = openai_client.chat.completions.create(
            model=server.chat_model_path.name, messages=[user_message("describe", image)], max_tokens=8,
            extra_body=extra)
        answers.append((response.choices[0].message.content, response.usage.visual_tokens_kept))
    assert answers[0] == answers[1] == answers[2]


def test_another_ratio_for_a_cached_image_is_a_hit(server, grpc_client):
    image = image_bytes((5, 250, 5))
    before = images_encoded(server)
    _, full = grpc_chat(grpc_client, "q", [image], max_tokens=2, pruning_method="none")
    _, pruned = grpc_chat(grpc_client, "q", [image], max_tokens=2, pruning_method="divprune",
                          visual_token_count=3)
    _, other = grpc_chat(grpc_client, "q", [image], max_tokens=2, pruning_method="visionzip",
                         visual_token_keep_ratio=0.5)
    assert (full.usage.cache_hit, pruned.usage.cache_hit, other.usage.cache_hit) == (False, True, True)
    assert pruned.usage.visual_tokens_kept == 3 and other.usage.visual_tokens_kept < full.usage.visual_tokens_kept
    assert images_encoded(server) == before + 1


@pytest.mark.parametrize("extra, field", [
    ({"pruning_method": "tome", "visual_token_count": 0}, "visual_token_count"),
    ({"pruning_method": "tome", "visual_token_count": 100_000}, "visual_token_count"),
    ({"pruning_method": "tome", "visual_token_keep_ratio": -0.5}, "visual_token_keep_ratio"),
])
def test_invalid_pruning_budget_is_rejected(server, extra, field):
    body = {"model": server.chat_model_path.name, "messages": [user_message("q", image_bytes((6, 6, 6)))],
            "max_tokens": 2, **extra}
    response = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == field


def decoder_stats(server) -> dict:
    return server.deployment_handle("LLMDecoder").stats.remote().result()


def test_healthz_answers_while_cache_hit_chats_stream_and_the_decoder_reads_by_key(server):
    """Three streaming cache hits (DivPrune, which runs in the decoder now) hold 3 of the ingress's 4
    slots; /healthz, asked once all three are streaming, answers before any of them has finished."""
    image, chats, max_tokens = image_bytes((123, 45, 67)), 3, 200
    payload = {"model": server.chat_model_path.name, "messages": [user_message("describe", image)],
               "max_tokens": max_tokens, "pruning_method": "divprune", "visual_token_keep_ratio": 0.25,
               "stream": True, "stream_options": {"include_usage": True}}
    assert httpx.post(f"{server.http_url}/v1/chat/completions", json={**payload, "stream": False,
                      "max_tokens": 2}, timeout=120).json()["usage"]["cache_hit"] is False  # now cached
    before = decoder_stats(server)

    async def fire():
        streaming = [asyncio.Event() for _ in range(chats)]
        finished: list[int] = []

        async def chat(i: int, client: httpx.AsyncClient) -> dict:
            usage = None
            async with client.stream("POST", f"{server.http_url}/v1/chat/completions", json=payload) as r:
                async for line in r.aiter_lines():
                    if '"content"' in line:
                        streaming[i].set()
                    if line.startswith("data: {") and '"usage": {' in line:
                        usage = json.loads(line.removeprefix("data: "))["usage"]
            finished.append(i)
            return usage

        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.ensure_future(chat(i, client)) for i in range(chats)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in streaming)), 120)
            health = await client.get(f"{server.http_url}/healthz")
            finished_at_health = len(finished)
            return health, finished_at_health, await asyncio.gather(*tasks)

    health, finished_at_health, usages = asyncio.run(fire())
    assert health.json() == {"status": "ok"}
    assert finished_at_health == 0  # every chat was still streaming when /healthz answered
    assert [(u["cache_hit"], u["completion_tokens"]) for u in usages] == [(True, max_tokens)] * chats
    assert all(u["visual_tokens_kept"] == -(-u["visual_tokens_in"] // 4) for u in usages)
    assert all("prune" in u["timings_ms"] and "encode" not in u["timings_ms"] for u in usages)
    after = decoder_stats(server)
    assert after["images_by_key"] - before["images_by_key"] == chats  # each hit was sent as a key only
    assert after["images_given"] == before["images_given"]


def test_decoder_says_when_a_key_is_not_cached(server):
    from deployments.stage_clients import ServeDecoderStage
    from pipelines.chat_decoder import FeaturesNotCached
    from triptych.types import SamplingParams, VisualInput

    stage = ServeDecoderStage(server.deployment_handle("LLMDecoder"))

    async def generate():
        missing = VisualInput("triptych:v1:vision:never-stored", "none", 1)
        return [d async for d in stage.generate([1, 2, 3], [missing], SamplingParams(max_tokens=2))]

    with pytest.raises(FeaturesNotCached) as info:
        asyncio.run(generate())
    assert info.value.key == "triptych:v1:vision:never-stored"
