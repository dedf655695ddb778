"""End to end text-to-image through Serve: TextEncoder -> cached prompt embeddings -> Denoiser,
over HTTP (official `openai` client) and gRPC streaming progress, on the `tiny` profile."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import grpc
import httpx
import pytest
from PIL import Image

from triptych.v1 import triptych_pb2 as pb


def stats(server, deployment: str) -> dict:
    return server.deployment_handle(deployment).stats.remote().result()


def generate(grpc_client, **fields) -> list[pb.GenerateImageResponse]:
    return list(grpc_client.generate_image(pb.GenerateImageRequest(**fields)))


def test_openai_client_returns_png_and_same_seed_is_byte_identical(server, openai_client):
    kwargs = {"model": server.image_model_path.name, "prompt": "a red circle above a blue square",
              "size": "64x64", "n": 2, "response_format": "b64_json",
              "extra_body": {"steps": 3, "sampler": "dpmpp_2m", "seed": 1234, "guidance_scale": 3.0}}
    first = openai_client.images.generate(**kwargs)
    second = openai_client.images.generate(**kwargs)
    pngs = [base64.b64decode(d.b64_json) for d in first.data]
    assert len(pngs) == 2 and pngs[0] != pngs[1]  # image i uses seed + i
    assert [base64.b64decode(d.b64_json) for d in second.data] == pngs
    image = Image.open(io.BytesIO(pngs[0]))
    assert image.format == "PNG" and image.size == (64, 64)
    extra = first.model_extra
    assert [d.model_extra["seed"] for d in first.data] == [1234, 1235]
    assert {"text_encode", "denoise", "vae_decode"} <= set(extra["timings_ms"])
    assert second.model_extra["cache_hit"] is True and "text_encode" not in second.model_extra["timings_ms"]


def test_grpc_streams_progress_then_the_image(server, grpc_client):
    events = generate(grpc_client, prompt="a green triangle", steps=4, sampler="ddim", seed=7)
    progress = [e.progress for e in events if e.HasField("progress")]
    assert [p.step for p in progress] == [1, 2, 3, 4] and all(p.total_steps == 4 for p in progress)
    assert events[-1].HasField("result") and len(events[-1].result.images) == 1
    assert events[-1].result.images[0].seed == 7
    assert Image.open(io.BytesIO(events[-1].result.images[0].png)).format == "PNG"


def test_repeated_prompt_skips_the_text_encoder(server, grpc_client):
    before = stats(server, "TextEncoder")["prompts_encoded"]
    first = generate(grpc_client, prompt="a unique yellow star", steps=1, seed=1)[-1].result
    after_first = stats(server, "TextEncoder")["prompts_encoded"]
    second = generate(grpc_client, prompt="a unique yellow star", steps=1, seed=2)[-1].result
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert after_first > before and stats(server, "TextEncoder")["prompts_encoded"] == after_first
    assert "text_encode" in first.timings_ms and "text_encode" not in second.timings_ms


def test_client_going_away_stops_the_denoising_loop(server):
    """The HTTP client disconnects once a 150-step job has started denoising: Serve cancels the
    request and the loop stops within a step of hearing it, long before the last step."""
    denoiser = server.deployment_handle("Denoiser")
    before = stats(server, "Denoiser")["steps_run"]

    async def start_then_disconnect() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            request = asyncio.ensure_future(client.post(
                f"{server.http_url}/v1/images/generations",
                json={"prompt": "a long job", "steps": 150, "sampler": "ddim"}))
            deadline = time.monotonic() + 120
            while (await denoiser.stats.remote())["steps_run"] - before < 2:
                assert not request.done() and time.monotonic() < deadline
                await asyncio.sleep(0.02)  # polling the replica's own counter, bounded by a deadline
            request.cancel()  # closes the connection
            with pytest.raises(asyncio.CancelledError):
                await request

    asyncio.run(start_then_disconnect())
    deadline = time.monotonic() + 60
    while stats(server, "Denoiser")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(server, "Denoiser")["in_flight"] == 0
    assert 2 <= stats(server, "Denoiser")["steps_run"] - before < 150


@pytest.mark.parametrize("fields, param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "steps": 151}, "steps"),
    ({"prompt": "x", "sampler": "magic"}, "sampler"),
    ({"prompt": "x", "size": "60x64"}, "size"),
    ({"prompt": "x", "size": "1024x1024"}, "size"),
    ({"prompt": "x", "size": "big"}, "size"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "x", "response_format": "url"}, "response_format"),
    ({"prompt": "word " * 200}, "prompt"),  # longer than the text encoder takes: rejected
])
def test_bad_image_requests_get_400_naming_the_field(server, fields, param):
    response = httpx.post(f"{server.http_url}/v1/images/generations", json={"steps": 1, **fields}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    if param == "sampler":
        assert "dpmpp_2m" in error["message"] and "ddim" in error["message"]


@pytest.mark.parametrize("extra, param, message", [
    ('"guidance_scale": NaN', "guidance_scale", "must be a finite number >= 0, got nan"),
    ('"guidance_scale": Infinity', "guidance_scale", "must be a finite number >= 0, got inf"),
    ('"guidance_scale": "7"', "guidance_scale", "must be a number, got str"),
    ('"steps": 2.5', "steps", "must be an integer"),
    ('"seed": -1', "seed", "must be an integer in 0..9223372036854775807 for n=1, got -1"),
    ('"seed": 9223372036854775807, "n": 2', "seed", "in 0..9223372036854775806 for n=2"),
    ('"size": "520x64"', "size", "multiples of 8 in 8..512, got 520x64"),
    ('"cache_interval": 0', "cache_interval", "must be an integer in 1..10"),
])
def test_image_knobs_just_outside_get_400_stating_the_rule(server, extra, param, message):
    raw = f'{{"prompt": "x", "steps": 1, {extra}}}'  # raw text: NaN / Infinity literals reach the server
    response = httpx.post(f"{server.http_url}/v1/images/generations", content=raw.encode(),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert message in response.json()["error"]["message"]


def test_image_knobs_at_their_ends_are_served(server):
    body = {"prompt": "ends", "size": "16x512", "steps": 1, "n": 8, "guidance_scale": 0, "cache_interval": 10,
            "seed": 2**63 - 8}
    response = httpx.post(f"{server.http_url}/v1/images/generations", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert [d["seed"] for d in response.json()["data"]] == list(range(2**63 - 8, 2**63))  # all fit an int64


@pytest.mark.parametrize("fields, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "steps": 500}, "steps"),
    ({"prompt": "x", "sampler": "magic"}, "sampler"),
    ({"prompt": "x", "width": 65}, "size"),
])
def test_grpc_bad_image_request_is_invalid_argument(grpc_client, fields, field):
    with pytest.raises(grpc.RpcError) as info:
        generate(grpc_client, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)
    assert generate(grpc_client, prompt="still serving", steps=1)[-1].HasField("result")


def test_cache_interval_through_http_and_grpc(server, grpc_client):
    body = {"prompt": "a blue diamond", "steps": 6, "seed": 11, "sampler": "ddim", "size": "32x32"}
    plain = httpx.post(f"{server.http_url}/v1/images/generations", json={**body, "cache_interval": 1}, timeout=60)
    cached = httpx.post(f"{server.http_url}/v1/images/generations", json={**body, "cache_interval": 3}, timeout=60)
    assert plain.status_code == cached.status_code == 200
    assert plain.json()["data"][0]["b64_json"] != cached.json()["data"][0]["b64_json"]  # fewer full U-Net steps
    result = generate(grpc_client, prompt="a blue diamond", steps=6, seed=11, sampler="ddim", width=32, height=32,
                      cache_interval=3)[-1].result
    assert base64.b64encode(result.images[0].png).decode() == cached.json()["data"][0]["b64_json"]
    bad = httpx.post(f"{server.http_url}/v1/images/generations", json={**body, "cache_interval": 11}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache_interval"
