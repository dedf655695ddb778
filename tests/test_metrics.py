"""Prometheus metrics, counted exactly: after a known number of requests the scrape of Ray's metrics
port shows counters and histogram counts that moved by exactly that much.

One Triptych for the module (tiny profile, fractional CPUs) started with `metrics_port`. Three chats
with the same image (the first encodes it: one vision miss at the ingress, then two hits there and two
in the decoder, which reads the features by key) and two image requests with the same prompt (the
first misses its prompt and negative-prompt embeddings, the second hits both). Ray's metrics agent
reports every few seconds, so the scrape is polled until it shows the expected values or 60 s pass.

The module starts its own Ray (marked ``own_ray``: conftest runs it before any module that uses the
session ``server`` fixture), or runs in a pytest process of its own.
"""

import time
import urllib.request

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from deployments.server import serving
from tests.serving import image_bytes, require_own_ray, user_message
from triptych.config import DeploymentOptions, TriptychConfig
from triptych.ports import free_port

DEADLINE_S = 60.0
CHATS, IMAGES, STEPS = 3, 2, 2

pytestmark = pytest.mark.own_ray


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    require_own_ray("test_metrics")
    config = TriptychConfig(
        profile="tiny", model_dir=tmp_path_factory.mktemp("models"), http_port=free_port(),
        grpc_port=free_port(),
        ingress=DeploymentOptions(num_cpus=0.1), vision_encoder=DeploymentOptions(num_cpus=0.1),
        llm_decoder=DeploymentOptions(num_cpus=0.2), text_encoder=DeploymentOptions(num_cpus=0.1),
        denoiser=DeploymentOptions(num_cpus=0.2),
    )
    port = free_port()
    with serving(config, quiet=True, metrics_port=port) as running:
        yield running, port


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the triptych metrics: (sample name, its deployment and stage/kind labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_triptych_"):
                labels = frozenset((k, v) for k, v in sample.labels.items() if k in ("deployment", "stage", "kind"))
                key = (sample.name.removeprefix("ray_"), labels)
                samples[key] = samples.get(key, 0.0) + sample.value  # summed over replicas
    return samples


def tags(deployment: str, **extra: str) -> frozenset:
    return frozenset({("deployment", deployment), *extra.items()})


def test_counters_move_by_exactly_the_requests_sent(metrics_server):
    server, port = metrics_server
    client = OpenAI(base_url=f"{server.http_url}/v1", api_key="unused", max_retries=0)
    image = image_bytes((10, 200, 30))
    usages = []
    for i in range(CHATS):
        reply = client.chat.completions.create(
            model="", messages=[user_message(f"what is this? {i}", image)], max_tokens=4,
            extra_body={"temperature": 0.0})
        usages.append(reply.usage.model_dump())  # with the extension fields (visual_tokens_*)
    for _ in range(IMAGES):
        client.images.generate(prompt="a red circle", size="64x64", n=1, extra_body={"steps": STEPS})

    chat = tags("TriptychIngress")
    expected = {
        ("triptych_prompt_tokens_total", chat): sum(u["prompt_tokens"] for u in usages),
        ("triptych_generation_tokens_total", chat): sum(u["completion_tokens"] for u in usages),
        ("triptych_visual_tokens_in_total", chat): sum(u["visual_tokens_in"] for u in usages),
        ("triptych_visual_tokens_kept_total", chat): sum(u["visual_tokens_kept"] for u in usages),
        ("triptych_time_to_first_token_seconds_count", chat): CHATS,
        ("triptych_e2e_request_latency_seconds_count", tags("TriptychIngress", kind="chat")): CHATS,
        ("triptych_e2e_request_latency_seconds_count", tags("TriptychIngress", kind="image")): IMAGES,
        ("triptych_request_queue_time_seconds_count", tags("LLMDecoder")): CHATS,
        ("triptych_embedding_cache_misses_total", tags("TriptychIngress", stage="vision")): 1,
        ("triptych_embedding_cache_hits_total", tags("TriptychIngress", stage="vision")): CHATS - 1,
        ("triptych_embedding_cache_hits_total", tags("LLMDecoder", stage="vision")): CHATS - 1,
        ("triptych_embedding_cache_misses_total", tags("TriptychIngress", stage="text")): 2,  # prompt, negative
        ("triptych_embedding_cache_hits_total", tags("TriptychIngress", stage="text")): 2 * (IMAGES - 1),
        ("triptych_denoise_steps_total", tags("Denoiser")): IMAGES * STEPS,
        ("triptych_images_generated_total", tags("Denoiser")): IMAGES,
    }
    assert all(u["completion_tokens"] > 0 and u["visual_tokens_in"] > 0 for u in usages)
    itl_count = sum(u["completion_tokens"] for u in usages) - CHATS  # at most: deltas may carry several tokens
    deadline = time.monotonic() + DEADLINE_S
    while True:
        samples = scrape(port)
        seen = {key: samples.get(key) for key in expected}
        if seen == expected:
            break
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:.0f} s: seen {seen}, expected {expected}"
        time.sleep(1.0)  # the poll period of this scrape loop (Ray reports every few seconds)
    assert not any(name.startswith("triptych_embedding_cache_errors") for name, _ in samples)
    assert 0 < samples[("triptych_inter_token_latency_seconds_count", chat)] <= itl_count
    assert samples[("triptych_num_requests_running", tags("LLMDecoder"))] == 0
    assert samples[("triptych_num_requests_waiting", tags("LLMDecoder"))] == 0
    assert samples[("triptych_decoder_batch_size", tags("LLMDecoder"))] == 1.0  # one request at a time
