"""`POST /v1/images/generations` with `"stream": true`: progress events, then the non-stream body, then
`[DONE]`; bad requests are still a 400 before any byte; a failure after it is an in-band error event;
a client that goes away stops the denoiser."""

import asyncio
import json
import time

import httpx
import pytest

from deployments.openai_images import images_sse
from triptych.types import ImageProgress, ImageResult


def sse_payloads(text: str) -> list:
    """The `data:` payloads of an SSE body, `[DONE]` kept as the string."""
    payloads = []
    for block in text.strip().split("\n\n"):
        data = "\n".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
        payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def denoiser_stats(server) -> dict:
    return server.deployment_handle("Denoiser").stats.remote().result()


def test_stream_sends_each_step_then_the_same_body_as_without_stream(server):
    body = {"prompt": "a blue square", "steps": 3, "sampler": "ddim", "seed": 11, "size": "64x64"}
    url = f"{server.http_url}/v1/images/generations"
    streamed = httpx.post(url, json={**body, "stream": True}, timeout=120)
    plain = httpx.post(url, json=body, timeout=120).json()
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(streamed.text)
    assert events[-1] == "[DONE]"
    progress, result = events[:-2], events[-2]
    assert [(p["type"], p["step"], p["total_steps"]) for p in progress] == [
        ("image_generation.progress", step, 3) for step in (1, 2, 3)]
    assert all(p["elapsed_ms"] >= 0 for p in progress)
    assert set(result) == set(plain) == {"created", "data", "cache_hit", "timings_ms"}
    assert result["data"] == plain["data"]  # same seed: the same PNG, the same shape


@pytest.mark.parametrize("fields, param", [
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "steps": 0}, "steps"),
    ({"stream": True, "sampler": "magic"}, "sampler"),
])
def test_bad_stream_request_is_a_400_json_error_before_any_event(server, fields, param):
    response = httpx.post(f"{server.http_url}/v1/images/generations",
                          json={"prompt": "x", "steps": 1, **fields}, timeout=60)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == param


def test_client_leaving_the_stream_stops_the_denoising_loop(server):
    """Read two progress events of a 150-step job, then close the connection: the replica's loop stops
    long before the last step."""
    before = denoiser_stats(server)["steps_run"]

    async def read_two_then_leave() -> int:
        body = {"prompt": "a long job", "steps": 150, "sampler": "ddim", "stream": True}
        seen = 0
        async with httpx.AsyncClient(timeout=120) as client, client.stream(
                "POST", f"{server.http_url}/v1/images/generations", json=body) as response:
            async for line in response.aiter_lines():
                seen += line.startswith("data:")
                if seen == 2:
                    break  # leaving the block closes the connection
        return seen

    assert asyncio.run(read_two_then_leave()) == 2
    deadline, previous = time.monotonic() + 60, None
    while True:  # until the replica holds no request and its counter read twice the same
        stats = denoiser_stats(server)
        if stats["in_flight"] == 0 and stats["steps_run"] == previous:
            break
        assert time.monotonic() < deadline, f"the denoiser kept running: {stats}"
        previous = stats["steps_run"]
        time.sleep(0.1)
    assert 2 <= stats["steps_run"] - before < 150


async def _collect(stream) -> list:
    return [chunk async for chunk in stream]


def test_failure_after_the_first_event_is_reported_in_band():
    async def events():
        yield ImageProgress(2, 3, 1.0)
        raise RuntimeError("the denoiser replica died")

    chunks = asyncio.run(_collect(images_sse(ImageProgress(1, 3, 0.5), events())))
    payloads = sse_payloads("".join(chunks))
    assert [p["step"] for p in payloads[:2]] == [1, 2]
    assert payloads[2]["error"]["type"] == "server_error" and "replica died" in payloads[2]["error"]["message"]
    assert payloads[3] == "[DONE]"


def test_closing_the_stream_early_closes_the_workflow_events():
    closed = []

    async def events():
        try:
            yield ImageProgress(2, 3, 1.0)
            yield ImageResult((b"png",), (0,), False, {})
        finally:
            closed.append(True)

    async def take_one_then_close() -> str:
        stream = images_sse(ImageProgress(1, 3, 0.5), events())
        first = await anext(stream)
        await anext(stream)  # the workflow generator is now suspended inside
        await stream.aclose()
        assert closed == [True]  # at once, not later when the collector finalises the generator
        return first

    assert sse_payloads(asyncio.run(take_one_then_close()))[0]["step"] == 1
