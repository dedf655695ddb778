"""Chaos under load, on one Triptych started for this module (tiny profile, fractional CPUs, own Ray,
loopback): two replicas of every stage so a killed one leaves a survivor, an external Redis this module
stops and starts, and the test-only faults of `triptych.config.FaultInjection` (a gate file that holds
work until the test opens it, a seed that fails after the first event) so nothing depends on luck.

What it shows, each with counts and orderings (never a wall-clock threshold):
- both replicas of a stage serve, and share what the cache holds; single flight coalesces requests that
  really overlap (held behind one gated encode);
- a failure after the first byte is an in-band SSE error / a gRPC error mid-stream, never retried;
- deadlines: Serve's `request_timeout_s` (HTTP 408) and the client's (gRPC DEADLINE_EXCEEDED, from the
  stage clients, `deployments.deadline`);
- a client that hangs up (HTTP, gRPC, mid-denoise) frees its decoder slot / stops its denoising loop in
  its first step, including the gRPC cancels Ray's proxy loses (they stop at the client's deadline);
- overload: a burst of 10x the admitted room is refused at once, before any admitted request finishes,
  and the admitted ones all finish; a full stage queue is 503 too; over gRPC RESOURCE_EXHAUSTED;
- Redis stopped and started under load: no request fails, misses during the outage, hits after;
- one replica of each stage killed under load: Serve replaces it; the only failures are requests in
  flight at the kill, and the client retries absorb the rest.

Marked `own_ray`: conftest runs it before the session server starts (or run it in a pytest of its own).
The counts each test measured are printed (run with -s) for the README's fault table.
"""

import asyncio
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from ray.serve.generated import serve_pb2, serve_pb2_grpc

from benchmarks.load_transports import GrpcSender, HttpSender
from benchmarks.load_workload import QUESTION, WorkloadGenerator, WorkloadOptions
from cache import EmbeddedRedis
from deployments.admission import admission_capacity
from deployments.deadline import TIMEOUT_METADATA
from launcher.client import TriptychClient
from launcher.retry import NO_RETRIES, RetryPolicy
from tests.chaos_tools import (
    LoadRun,
    in_flight_at,
    kill_one_replica,
    running_replica_ids,
    started_after,
    stats_per_replica,
    wait_until,
)
from tests.serving import image_bytes, serving_on_free_ports, user_message
from triptych.config import CacheOptions, DecoderBatching, DeploymentOptions, FaultInjection, TriptychConfig
from triptych.v1 import triptych_pb2 as pb

pytestmark = pytest.mark.own_ray

FAIL_SEED, GATE_SEED = 4242, 4343
REQUEST_TIMEOUT_S = 20.0  # Serve's HTTP / gRPC proxy limit for this module (the 408 test waits it out)
STAGES = ("VisionEncoder", "LLMDecoder", "TextEncoder", "Denoiser")
RETRY = RetryPolicy(retries=3, base_delay_s=0.2, max_delay_s=2.0)


def report(what: str, **counts) -> None:
    """One line of measured counts for the README's fault table (visible with pytest -s)."""
    print(f"\n[chaos] {what}: " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


@dataclass
class Chaos:
    server: object  # deployments.server.RunningServer
    redis: EmbeddedRedis
    gate: Path

    def stats(self, deployment: str) -> dict:
        return self.server.deployment_handle(deployment).stats.remote().result()

    def per_replica(self, deployment: str) -> dict[str, dict]:
        return stats_per_replica(self.server.deployment_handle(deployment), 2)

    def total(self, deployment: str, counter: str) -> int:
        return sum(s[counter] for s in self.per_replica(deployment).values())

    def ingress(self, method: str) -> dict:
        return getattr(self.server.ingress_handle(), method).remote().result()

    def close_gate(self) -> None:
        self.gate.unlink(missing_ok=True)

    def open_gate(self) -> None:
        self.gate.touch()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    from tests.serving import require_own_ray

    require_own_ray("test_chaos")
    root = tmp_path_factory.mktemp("chaos")
    gate = root / "gate"
    gate.touch()  # open: gated work passes until a test removes the file
    redis = EmbeddedRedis().start()  # a free port, its bind retried; the restart below reuses it

    def two(**options) -> DeploymentOptions:
        return DeploymentOptions(min_replicas=2, max_replicas=2, num_cpus=0.1, **options)

    config = TriptychConfig(
        profile="tiny", model_dir=tmp_path_factory.mktemp("models"), request_timeout_s=REQUEST_TIMEOUT_S,
        # every refusal is the edge admission's (Serve's proxy queue unbounded), see deployments.admission
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=128, max_queued_requests=-1),
        # 2 x 1 encodes + 2 queued: six chats with fresh images overfill the encoder's own Serve queue
        vision_encoder=two(max_ongoing_requests=1, max_queued_requests=2),
        llm_decoder=two(max_ongoing_requests=3, max_queued_requests=8),  # room for 6 chats (edge admission)
        decoder_batching=DecoderBatching(max_batch_size=2, max_tokens_per_step=64, max_waiting=1),
        text_encoder=two(), denoiser=two(max_ongoing_requests=2, max_queued_requests=8),
        embedder=DeploymentOptions(num_cpus=0.1),
        cache=CacheOptions(redis_url=redis.url),
        faults=FaultInjection(gate_file=str(gate), gate_encoder=True, gate_seed=GATE_SEED, fail_seed=FAIL_SEED),
    )
    ports = lambda http, grpc: config.model_copy(update={"http_port": http, "grpc_port": grpc})
    try:
        with serving_on_free_ports(ports, quiet=True) as running:
            yield Chaos(running, redis, gate)
    finally:
        redis.stop()


def chat_body(server, image: bytes | None = None, **fields) -> dict:
    return {"model": server.chat_model_path.name, "max_tokens": 16, "temperature": 0,
            "messages": [user_message("what is it?", *([image] if image else []))], **fields}


def http_chat(server, image=None, **fields) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/chat/completions", json=chat_body(server, image, **fields), timeout=120)


def grpc_chat_call(channel, *, seed=None, max_tokens=16, metadata=(), timeout=None, image=None):
    content = ([pb.ContentPart(image=image)] if image else []) + [pb.ContentPart(text="go")]
    request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=content)], max_tokens=max_tokens,
                             **({"seed": seed} if seed is not None else {}))
    method = channel.unary_stream("/triptych.v1.Triptych/Chat", request_serializer=pb.ChatRequest.SerializeToString,
                                  response_deserializer=pb.ChatResponse.FromString)
    return method(request, metadata=metadata, timeout=timeout)


def drain(stream) -> tuple[list, grpc.RpcError | None]:
    """Every message of a gRPC stream, and the error that ended it (None: it ended OK)."""
    messages: list = []
    try:
        for message in stream:
            messages.append(message)  # noqa: PERF402  an error ends the loop: keep what came before it
    except grpc.RpcError as exc:
        return messages, exc
    return messages, None


# ---- serving with two replicas --------------------------------------------------------------------


def test_healthz_over_grpc_both_services(chaos):
    with grpc.insecure_channel(chaos.server.grpc_target) as channel:
        healthz = serve_pb2_grpc.RayServeAPIServiceStub(channel).Healthz(serve_pb2.HealthzRequest(), timeout=30)
        apps = serve_pb2_grpc.RayServeAPIServiceStub(channel).ListApplications(
            serve_pb2.ListApplicationsRequest(), timeout=30)
    assert healthz.message == "success" and chaos.server.app_name in apps.application_names
    with TriptychClient(chaos.server.grpc_target) as client:
        assert client.health() == "SERVING"


def test_two_decoder_replicas_read_what_one_encode_cached(chaos):
    """One new image, encoded once; the chats after it are hits, and both decoder replicas read its
    features from Redis by key (neither was given them)."""
    image = image_bytes((201, 17, 3))
    encoded = chaos.total("VisionEncoder", "images_encoded")
    before = chaos.per_replica("LLMDecoder")
    first = http_chat(chaos.server, image)
    assert first.status_code == 200 and first.json()["usage"]["cache_hit"] is False

    def both_read_by_key():
        assert http_chat(chaos.server, image).json()["usage"]["cache_hit"] is True
        now = chaos.per_replica("LLMDecoder")
        return all(now[r]["images_by_key"] > before[r]["images_by_key"] for r in before)

    wait_until(both_read_by_key, "both decoder replicas serving a cache hit", poll_s=0)
    assert chaos.total("VisionEncoder", "images_encoded") == encoded + 1


def test_same_seed_same_png_on_both_denoiser_replicas(chaos):
    body = {"prompt": "a red circle", "size": "32x32", "steps": 2, "seed": 77}
    before = chaos.per_replica("Denoiser")
    pngs = set()

    def both_painted():
        response = httpx.post(f"{chaos.server.http_url}/v1/images/generations", json=body, timeout=120)
        pngs.add(response.json()["data"][0]["b64_json"])
        now = chaos.per_replica("Denoiser")
        return all(now[r]["results"] > before[r]["results"] for r in before)

    wait_until(both_painted, "both denoiser replicas painting", poll_s=0)
    assert len(pngs) == 1  # byte-identical PNGs from two replicas


def test_single_flight_coalesces_requests_waiting_on_one_encode(chaos):
    """Five chats for one new image while the encoder is held at the gate: one encode, four coalesced
    (the ingress's single flight, counted by its cache), all answered once the gate opens."""
    image, n = image_bytes((9, 199, 99)), 5
    coalesced = chaos.ingress("cache_stats")["coalesced"]
    encoded = chaos.total("VisionEncoder", "images_encoded")
    chaos.close_gate()
    try:
        async def fire():
            async with httpx.AsyncClient(timeout=120) as client:
                posts = [asyncio.ensure_future(client.post(f"{chaos.server.http_url}/v1/chat/completions",
                                                           json=chat_body(chaos.server, image))) for _ in range(n)]
                await asyncio.to_thread(wait_until, lambda: chaos.ingress("cache_stats")["coalesced"] == coalesced + n - 1,
                                        "four requests coalesced behind the held encode")
                chaos.open_gate()
                return await asyncio.gather(*posts)

        responses = asyncio.run(fire())
    finally:
        chaos.open_gate()
    assert [r.status_code for r in responses] == [200] * n
    assert sorted(r.json()["usage"]["cache_hit"] for r in responses) == [False] * n  # all share the one miss
    assert chaos.total("VisionEncoder", "images_encoded") == encoded + 1
    report("single flight", requests=n, encodes=1, coalesced=n - 1)


# ---- failures after the first byte, deadlines -------------------------------------------------------


def test_a_failure_after_the_first_byte_is_in_band_and_never_retried(chaos):
    payload = chat_body(chaos.server, seed=FAIL_SEED, max_tokens=64, stream=True)
    with httpx.stream("POST", f"{chaos.server.http_url}/v1/chat/completions", json=payload, timeout=120) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and "error" in chunks[-1] and "injected decoder failure" in chunks[-1]["error"]["message"]
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in chunks[:-1])  # text came first

    with TriptychClient(chaos.server.grpc_target, retry=RETRY) as client:
        got, error = drain(client.chat("go", max_tokens=64, seed=FAIL_SEED))
        assert got and error is not None and error.code() == grpc.StatusCode.INTERNAL  # (Serve cuts the details)
        progress, error = drain(client.generate_image(pb.GenerateImageRequest(prompt="x", steps=4, seed=FAIL_SEED)))
        assert [e.progress.step for e in progress] == [1] and error.code() == grpc.StatusCode.INTERNAL
        assert client.retries == 0  # nothing was retried after a first byte
        assert list(client.chat("still there?", max_tokens=2))[-1].HasField("usage")


def test_the_clients_deadline_stops_a_stalled_stream_with_deadline_exceeded(chaos):
    """A chat held at the gate after its first text: the client's `triptych-timeout-s` (no gRPC deadline
    of its own) passes, the ingress's stage client cancels the decoder stream, the client gets
    DEADLINE_EXCEEDED after its first message, and no decoder slot stays taken."""
    chaos.close_gate()
    try:
        with grpc.insecure_channel(chaos.server.grpc_target) as channel:
            got, error = drain(grpc_chat_call(channel, seed=GATE_SEED, max_tokens=32,
                                              metadata=((TIMEOUT_METADATA, "3"),)))
    finally:
        chaos.open_gate()
    assert got and error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    wait_until(lambda: chaos.total("LLMDecoder", "running") == 0, "the stalled request's slot freed")


def test_request_timeout_s_is_408_over_http_and_deadline_exceeded_over_grpc(chaos):
    """A chat whose new image is held at the (closed) encoder gate past the module's request_timeout_s."""
    def over_grpc() -> grpc.StatusCode:
        with grpc.insecure_channel(chaos.server.grpc_target) as channel:
            try:
                list(grpc_chat_call(channel, image=image_bytes((26, 53, 58))))
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    async def both():  # side by side: one wait of request_timeout_s for the two
        return await asyncio.gather(asyncio.to_thread(http_chat, chaos.server, image_bytes((3, 141, 59))),
                                    asyncio.to_thread(over_grpc))

    chaos.close_gate()
    try:
        response, code = asyncio.run(both())
    finally:
        chaos.open_gate()
    assert response.status_code == 408, response.text
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


# ---- clients that hang up -------------------------------------------------------------------------


def test_http_client_hanging_up_mid_stream_frees_its_decoder_slot(chaos):
    cancelled = chaos.total("LLMDecoder", "cancelled")
    payload = chat_body(chaos.server, max_tokens=480, stream=True, seed=GATE_SEED)  # longer than a hang-up takes
    chaos.close_gate()  # the stream pauses after its first text: the hang-up lands mid-stream
    try:
        with httpx.stream("POST", f"{chaos.server.http_url}/v1/chat/completions", json=payload, timeout=120) as r:
            for line in r.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # the first text: hang up
        wait_until(lambda: chaos.total("LLMDecoder", "running") == 0, "the decoder slot freed")
    finally:
        chaos.open_gate()
    assert chaos.total("LLMDecoder", "cancelled") == cancelled + 1
    assert chaos.total("LLMDecoder", "kv_slots_in_use") == 0


def test_grpc_cancels_free_the_decoder_even_when_the_proxy_loses_them(chaos):
    """Twelve gRPC chats cancelled after their first message. Ray's gRPC proxy loses some cancels
    (deployments.deadline says why): those run to their end instead of stopping. Every slot is freed
    either way; the counts are reported."""
    tries = 12
    before = {k: chaos.total("LLMDecoder", k) for k in ("cancelled", "finished")}
    with TriptychClient(chaos.server.grpc_target, timeout_s=60) as client:
        for _ in range(tries):
            stream = client.chat("go", max_tokens=400)
            next(stream)
            stream.cancel()
            wait_until(lambda: chaos.total("LLMDecoder", "running") == 0, "the cancelled chat's slot freed")
    after = {k: chaos.total("LLMDecoder", k) for k in ("cancelled", "finished")}
    stopped, ran_to_end = after["cancelled"] - before["cancelled"], after["finished"] - before["finished"]
    assert stopped + ran_to_end == tries and stopped >= 1
    report("gRPC chat cancels", tries=tries, stopped_by_the_cancel=stopped, ran_to_the_end=ran_to_end)


def test_hanging_up_mid_denoise_stops_the_loop_in_its_first_step(chaos):
    """Image requests held inside their first denoising step (gate): the client hangs up (HTTP: closes
    the connection; gRPC: cancel()). The loop stops in that step whether the cancel reaches the replica
    or Ray's proxy loses it and the client's deadline (10 s) stops it instead."""
    steps = chaos.total("Denoiser", "steps_run")
    body = {"prompt": "a long job", "steps": 150, "sampler": "ddim", "seed": GATE_SEED, "size": "32x32"}
    chaos.close_gate()
    try:
        async def http_hang_up():
            async with httpx.AsyncClient(timeout=120) as client:
                request = asyncio.ensure_future(client.post(f"{chaos.server.http_url}/v1/images/generations", json=body))
                await asyncio.to_thread(wait_until, lambda: chaos.total("Denoiser", "steps_run") == steps + 1,
                                        "the first step")
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await request

        asyncio.run(http_hang_up())
        wait_until(lambda: chaos.total("Denoiser", "in_flight") == 0, "the HTTP image request ended")
        grpc_tries, started = 6, time.perf_counter()
        ended_s = []
        with TriptychClient(chaos.server.grpc_target, timeout_s=10) as client:
            for _ in range(grpc_tries):
                call = client.generate_image(pb.GenerateImageRequest(prompt="a long job", steps=150, sampler="ddim",
                                                                     seed=GATE_SEED, width=32, height=32))
                assert next(call).progress.step == 1
                cancelled_at = time.perf_counter()
                call.cancel()
                wait_until(lambda: chaos.total("Denoiser", "in_flight") == 0, "the cancelled image request ended")
                ended_s.append(time.perf_counter() - cancelled_at)
    finally:
        chaos.open_gate()
    assert chaos.total("Denoiser", "steps_run") == steps + 1 + grpc_tries  # one step each, then stopped
    report("hang-ups mid-denoise", http=1, grpc=grpc_tries, steps_each=1,
           grpc_seconds_to_stop=[round(s, 1) for s in ended_s], wall_s=round(time.perf_counter() - started, 1))


# ---- overload ---------------------------------------------------------------------------------------


def test_a_burst_of_ten_times_the_room_is_refused_before_any_admitted_request_finishes(chaos):
    """10x the chats one ingress replica admits (the decoders' room), all at once over HTTP, no retries;
    then 2x over gRPC. Refusals (503 / RESOURCE_EXHAUSTED, from the edge admission) all arrive before the
    first admitted request finishes; every admitted one finishes with its usage."""
    room = admission_capacity(chaos.server.config)["chat"]
    image = image_bytes((77, 7, 177))
    assert http_chat(chaos.server, image).status_code == 200  # cached: the burst is decoder work
    payload = chat_body(chaos.server, image, max_tokens=300, stream=True, stream_options={"include_usage": True})

    async def burst(n: int):
        t0 = time.perf_counter()

        async def one(client):
            async with client.stream("POST", f"{chaos.server.http_url}/v1/chat/completions", json=payload) as r:
                head = time.perf_counter() - t0
                body = (await r.aread()).decode()
                return r.status_code, head, time.perf_counter() - t0, body

        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
            return await asyncio.gather(*(one(client) for _ in range(n)))

    results = asyncio.run(burst(10 * room))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) + len(refused) == len(results) and served and refused
    assert all('"usage": {' in body and body.rstrip().endswith("data: [DONE]") for *_, body in served)
    assert all(json.loads(body)["error"]["type"] == "server_overloaded" for *_, body in refused)
    assert max(head for _, head, _, _ in refused) < min(end for _, _, end, _ in served)  # refused first
    refuse_ms = statistics.median(head for _, head, _, _ in refused) * 1000
    served_ms = statistics.median(end for _, _, end, _ in served) * 1000

    async def grpc_burst(n: int):
        async with grpc.aio.insecure_channel(chaos.server.grpc_target) as channel:
            async def one():
                try:
                    return grpc.StatusCode.OK, len([m async for m in grpc_chat_call(channel, max_tokens=32, image=image)])
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details()
            return await asyncio.gather(*(one() for _ in range(n)))

    codes = [code for code, _ in asyncio.run(grpc_burst(2 * room))]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert chaos.ingress("admission_stats")["in_flight"] == {"chat": 0, "image": 0}
    report("burst 10x over HTTP", room=room, sent=len(results), served=len(served), refused=len(refused),
           refuse_ms_p50=round(refuse_ms), served_ms_p50=round(served_ms))
    report("burst 2x over gRPC", sent=len(codes), ok=codes.count(grpc.StatusCode.OK),
           resource_exhausted=codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED))


def test_a_full_stage_queue_is_503_and_the_others_finish(chaos):
    """Fresh images while the encoder is held: its replicas take 2 x 1 and its Serve queue 2; the chats
    past that are refused by the stage's own backpressure (503), the held ones finish once it opens."""
    n = admission_capacity(chaos.server.config)["chat"]  # the edge admits 6 (the decoders' room); the encoder holds 4
    chaos.close_gate()
    try:
        async def fire():
            async with httpx.AsyncClient(timeout=120) as client:
                posts = [asyncio.ensure_future(client.post(
                    f"{chaos.server.http_url}/v1/chat/completions",
                    json=chat_body(chaos.server, image_bytes((i, 250, 1))))) for i in range(n)]
                await asyncio.wait(posts, timeout=60, return_when=asyncio.FIRST_COMPLETED)  # a refusal
                chaos.open_gate()
                return await asyncio.gather(*posts)

        responses = asyncio.run(fire())
    finally:
        chaos.open_gate()
    statuses = sorted(r.status_code for r in responses)
    refused = [r.json()["error"]["message"] for r in responses if r.status_code == 503]
    assert set(statuses) == {200, 503}, statuses
    assert all("backpressure" in message for message in refused), refused
    report("full stage queue", sent=n, served=statuses.count(200), refused=len(refused))


# ---- Redis and replicas failing under load ----------------------------------------------------------


def chat_specs(n: int, **options):
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 1.0}, max_tokens=8, **options))
    return generator, generator.take(n)


def test_redis_stopped_and_started_under_load_fails_no_request(chaos):
    generator, specs = chat_specs(400, repeat_fraction=1.0, pool_size=2)
    sender = HttpSender(chaos.server.http_url, timeout_s=120, retry=NO_RETRIES)
    for image in generator.pool:  # both pooled images cached before the load
        assert http_chat(chaos.server, image).status_code == 200
    with LoadRun(specs, sender.send, users=2) as load:
        load.wait_done(6, "load before the outage")
        port, stopped_at = chaos.redis.port, time.perf_counter()
        chaos.redis.stop()
        load.wait_done(load.count + 8, "load during the outage")
        restarted_at = time.perf_counter()
        chaos.redis = EmbeddedRedis(port=port).start()  # the same address, empty

        def hits_again():
            after = started_after(load.records, restarted_at)
            return len(after) >= 4 and all(r.cache_hit for r in sorted(after, key=lambda r: r.scheduled_s)[-4:])

        wait_until(hits_again, "four hits in a row after the restart")
    records = load.finish()
    sender.close()
    assert all(r.ok for r in records), {r.status for r in records}
    during = [r for r in started_after(records, stopped_at) if r.scheduled_s + r.e2e_s < restarted_at]
    before = [r for r in records if r.scheduled_s + r.e2e_s < stopped_at]
    assert during and not any(r.cache_hit for r in during)  # misses (re-encoded) while Redis was down
    assert before and all(r.cache_hit for r in before)
    report("Redis stop + start under load", sent=len(records), ok=sum(r.ok for r in records), failed=0,
           retried=sum(r.retries > 0 for r in records), misses_during=len(during),
           hits_after=sum(bool(r.cache_hit) for r in started_after(records, restarted_at)))


@pytest.mark.parametrize("deployment", STAGES)
def test_killing_one_replica_under_load_loses_only_requests_in_flight(chaos, deployment):
    """Chats with fresh images (the encoder runs) and images with fresh prompts (the text encoder runs),
    three users with client retries, while one replica of `deployment` is killed: Serve replaces it;
    every failed request was in flight at the kill; none started after the replacement failed."""
    app = chaos.server.app_name
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 0.6, "image": 0.4}, repeat_fraction=0.0,
                                                  max_tokens=8, image_steps=2, image_size=32, seed=len(deployment)))
    specs = [dataclasses.replace(s, prompt=f"{s.prompt} {deployment} {s.index}") if s.kind == "image" else s
             for s in generator.take(400)]
    transport = GrpcSender if deployment in ("LLMDecoder", "Denoiser") else HttpSender
    sender = transport(chaos.server.grpc_target if transport is GrpcSender else chaos.server.http_url, 120,
                       retry=RETRY)
    before = running_replica_ids(app, deployment)
    assert len(before) == 2
    with LoadRun(specs, sender.send, users=3) as load:
        load.wait_done(6, "load before the kill")
        killed_at = time.perf_counter()
        killed = kill_one_replica(app, deployment)
        back = wait_until(lambda: (ids := running_replica_ids(app, deployment)) and len(ids) == 2 and ids != before
                          and ids, f"{deployment} back to 2 replicas")
        replaced_at = time.perf_counter()
        load.wait_done(load.count + 6, "load after the replacement")
    records = load.finish()
    sender.close()
    failed = [r for r in records if not r.ok]
    at_kill = in_flight_at(records, killed_at)
    assert len(back - before) == 1 and len(before - back) == 1  # one replaced, the survivor kept
    assert all(r in at_kill for r in failed), [(r.status, r.error) for r in failed]
    assert len(failed) <= len(at_kill)
    assert all(r.ok for r in started_after(records, replaced_at))
    report(f"kill one {deployment} replica ({killed.rsplit('#', 1)[1]}) over {transport.__name__[:-6]}",
           sent=len(records), ok=len(records) - len(failed), failed=len(failed), in_flight_at_kill=len(at_kill),
           retried=sum(r.retries > 0 for r in records), failed_statuses=sorted({r.status for r in failed}))


def test_after_the_chaos_every_stage_still_answers(chaos):
    assert http_chat(chaos.server, image_bytes((1, 1, 250))).status_code == 200
    with TriptychClient(chaos.server.grpc_target) as client:
        assert list(client.chat(QUESTION, max_tokens=2))[-1].HasField("usage")
        assert list(client.generate_image(pb.GenerateImageRequest(prompt="x", steps=1)))[-1].HasField("result")
