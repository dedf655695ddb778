"""Per-stage autoscaling, shown rather than assumed: under chat load the LLMDecoder deployment scales
up, and back to its minimum once the load stops, while the Denoiser (allowed to scale too, but sent
nothing) stays at its minimum throughout.

One Triptych for the module (tiny profile, fractional CPUs) with Ray's own test settings for speed
(metrics every 0.2 s, 1 s look-back, no upscale delay, 2 s downscale delay; production keeps Serve's
10 s / 30 s / 30 s / 600 s). The load is the load benchmark's closed loop (``benchmarks.load_drivers``):
six users sending cached-image chats, until the scale-up is seen (or their request budget ends).
Replica counts are RUNNING replicas from ``serve.status()`` (``benchmarks.load_replicas``), polled
until a condition holds or its deadline passes.

The module starts its own Ray (marked ``own_ray``: conftest runs it before any module that uses the
session ``server`` fixture), or runs in a pytest process of its own.
"""

import threading
import time

import pytest

from benchmarks.load_drivers import Level, run_level
from benchmarks.load_replicas import running_replicas
from benchmarks.load_transports import HttpSender
from benchmarks.load_workload import WorkloadGenerator, WorkloadOptions
from deployments.server import serving
from tests.serving import require_own_ray
from triptych.config import DeploymentOptions, TriptychConfig
from triptych.ports import free_port

FAST = {"metrics_interval_s": 0.2, "look_back_period_s": 1.0, "upscale_delay_s": 0.0, "downscale_delay_s": 2.0}
LOADED, UNLOADED = "LLMDecoder", "Denoiser"
DEADLINE_S = 60.0
USERS = 6

pytestmark = pytest.mark.own_ray


@pytest.fixture(scope="module")
def autoscaling_server(tmp_path_factory):
    require_own_ray("test_autoscaling")

    def scalable(max_replicas: int, **options) -> DeploymentOptions:
        return DeploymentOptions(min_replicas=1, max_replicas=max_replicas, target_ongoing_requests=1,
                                 num_cpus=0.1, **FAST, **options)

    config = TriptychConfig(
        profile="tiny", model_dir=tmp_path_factory.mktemp("models"), http_port=free_port(),
        grpc_port=free_port(),
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=32, max_queued_requests=64),
        vision_encoder=DeploymentOptions(num_cpus=0.1),
        llm_decoder=scalable(3, max_ongoing_requests=4),
        text_encoder=DeploymentOptions(num_cpus=0.1),
        denoiser=scalable(2),
    )
    with serving(config, quiet=True) as running:
        yield running


class ReplicaWatch:
    """Polls the replica counts of one application; remembers every count it saw."""

    def __init__(self, app_name: str):
        self.app_name = app_name
        self.history: list[dict[str, int]] = []

    def until(self, condition, what: str, deadline_s: float = DEADLINE_S) -> dict[str, int]:
        deadline = time.monotonic() + deadline_s
        while True:
            counts = running_replicas(self.app_name)
            self.history.append(counts)
            if condition(counts):
                return counts
            assert time.monotonic() < deadline, f"{what}: not within {deadline_s:.0f} s, last counts {counts}"
            time.sleep(0.2)  # the poll period of this condition loop


def test_loaded_stage_scales_up_then_down_while_the_unloaded_one_stays_at_minimum(autoscaling_server):
    watch = ReplicaWatch(autoscaling_server.app_name)
    watch.until(lambda c: c.get(LOADED) == 1 and c.get(UNLOADED) == 1, "both at their minimum at start")

    sender = HttpSender(autoscaling_server.http_url, timeout_s=120)
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 1.0}, repeat_fraction=1.0, pool_size=1,
                                                  max_tokens=48))
    budget = 400
    specs = generator.take(budget + 1)
    assert sender.send(specs[0], time.perf_counter()).ok  # caches the image: the load is decoder work
    stop, runs = threading.Event(), []
    load = threading.Thread(target=lambda: runs.append(run_level(
        Level("closed", USERS), specs[1:], sender.send, max_seconds=DEADLINE_S + 30, stop=stop)))
    load.start()
    try:
        scaled = watch.until(lambda c: c.get(LOADED, 0) >= 2, f"{LOADED} scale-up under {USERS} users")
        loaded_when_scaled = load.is_alive()
    finally:
        stop.set()
        load.join()
    records = runs[0].records
    assert loaded_when_scaled and len(records) < budget  # it scaled while the load ran; we ended the load
    assert all(r.ok for r in records), {r.status for r in records}
    assert all(r.cache_hit for r in records)

    back = watch.until(lambda c: c.get(LOADED) == 1, f"{LOADED} back to its minimum after the load")
    sender.close()
    assert scaled[LOADED] >= 2 and back[LOADED] == 1
    peak_at = max(range(len(watch.history)), key=lambda i: watch.history[i][LOADED])
    assert any(h[LOADED] == 1 for h in watch.history[peak_at:])  # the ordering: up, then down
    assert {h[UNLOADED] for h in watch.history} == {1}  # never above (nor below) its minimum
