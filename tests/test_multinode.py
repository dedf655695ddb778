"""Triptych on a multi-node Ray cluster (all nodes on this machine): each stage lands on
the node whose custom resource it asks for, every replica on every node shares one external Redis, and
a lost node's replicas come back on another node that offers the same resource.

One cluster for the module (``ray.cluster_utils.Cluster``, as Ray's own Serve tests build theirs): a
head with the Serve controller, the HTTP proxy and the dashboard (its Serve REST API says which node
each replica runs on) offering ``cpu_node`` and ``denoiser_node``; a node offering ``vision_node``; a
node offering ``decoder_node``; a second ``decoder_node`` node joins before the node-loss test. The
Serve config is ``deploy/cluster.yaml`` with its resource pins kept and the rest shrunk for 2 cores:
tiny profile, fixed replica counts (2 ingress replicas, 1 of each stage), 0.1-0.2 CPU each, no GPUs,
the external Redis a ``redis-server`` this module starts on a free loopback port, HTTP on a free
loopback port through one proxy on the head.

The shared cache is checked per ingress replica through the embedding-cache metrics (their ``replica``
label; each node's metrics agent is scraped, Ray reporting every second here) and the encoder's own
call counter. Node loss: the load generator's closed-loop users send chats while the decoder's node is
removed (``Cluster.remove_node``); Serve starts the decoder on the other ``decoder_node`` node and the
requests sent after that succeed. Every wait is a condition loop with a deadline.

The module starts its own Ray (marked ``own_ray``: conftest runs it before any module that uses the
session ``server`` fixture), or runs in a pytest process of its own.
"""

import shutil
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.load_drivers import Level, run_level
from benchmarks.load_replicas import running_replicas
from benchmarks.load_transports import HttpSender, Record
from benchmarks.load_workload import WorkloadGenerator, WorkloadOptions
from cache import EmbeddedRedis
from deployments.serve_config import validate_serve_config
from deployments.server import serving
from tests.serving import image_bytes, require_own_ray, user_message
from triptych.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120.0
NODES = {"vision": {"vision_node": 4}, "decoder": {"decoder_node": 1}}  # the head: cpu_node, denoiser_node

pytestmark = pytest.mark.own_ray


def _until(condition, what: str, deadline_s: float = DEADLINE_S, period_s: float = 0.5):
    """Poll ``condition()`` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {deadline_s:.0f} s"
        time.sleep(period_s)  # the poll period of this condition loop
    return value


class LocalCluster:
    """The module's Ray cluster: a head and worker nodes on this machine, each with its own metrics port
    (Ray binds the machine's address, as every Ray in this suite does; HTTP, Redis and the dashboard listen on
    127.0.0.1)."""

    def __init__(self, temp_dir: Path):
        from ray.cluster_utils import Cluster

        dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.metrics_ports: list[int] = []
        self._cluster = Cluster()
        self.temp_dir = temp_dir
        self.server = None  # the RunningServer, once Triptych is deployed
        self.head = self.add({"cpu_node": 1, "denoiser_node": 1}, include_dashboard=True, dashboard_host="127.0.0.1",
                             dashboard_port=dashboard_port, temp_dir=str(temp_dir),
                             _system_config={"metrics_report_interval_ms": 1000})  # metrics every second
        self.nodes = {name: self.add(resources) for name, resources in NODES.items()}

    def add(self, resources: dict[str, float], **head_options):
        port = free_port()
        self.metrics_ports.append(port)
        return self._cluster.add_node(num_cpus=1, resources=resources, metrics_export_port=port,
                                      dashboard_agent_listen_port=free_port(), runtime_env_agent_port=free_port(),
                                      **head_options)

    def remove(self, node) -> None:
        self._cluster.remove_node(node)

    @property
    def address(self) -> str:
        return self._cluster.address

    def shutdown(self) -> None:
        self._cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _serve_config(http_port: int, model_dir: Path, redis_url: str):
    """deploy/cluster.yaml for this cluster: its resource pins, with tiny models and small shares."""
    raw = yaml.safe_load((ROOT / "deploy" / "cluster.yaml").read_text())
    raw["proxy_location"] = "HeadOnly"  # every node has the same IP here: one proxy, on the head
    raw["http_options"].update(host="127.0.0.1", port=http_port)
    raw["grpc_options"]["port"] = free_port()
    app = raw["applications"][0]
    app["runtime_env"]["env_vars"]["TRIPTYCH_MODEL_DIR"] = str(model_dir)
    args = app["args"]
    args.update(profile="tiny", model_dir=str(model_dir),
                cache={"redis_url": redis_url, "socket_timeout_s": 2.0},  # a busy 2-core box: no timeout misses
                decoder_batching={"max_batch_size": 4, "max_tokens_per_step": 64, "max_waiting": 4})
    for stage, options in args.items():  # every deployment block: small CPU shares, no GPU, fixed counts
        if isinstance(options, dict) and "num_cpus" in options:
            replicas = 2 if stage == "ingress" else 1
            options.update(num_cpus=0.2 if stage == "llm_decoder" else 0.1, num_gpus=0, min_replicas=replicas,
                           max_replicas=replicas)
    args["ingress"]["max_ongoing_requests"] = 1  # two chats at once go to the two ingress replicas
    return validate_serve_config(raw, "deploy/cluster.yaml (multi-node test)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_own_ray("test_multinode")
    with EmbeddedRedis(maxmemory_mb=64) as redis:
        local = LocalCluster(Path(f"/tmp/rt-mn-{free_port()}"))  # short: Ray's socket paths have a length limit
        try:
            schema, configs = _serve_config(free_port(), tmp_path_factory.mktemp("models"), redis.url)
            with serving(serve_config=schema, app_configs=configs, address=local.address, quiet=True) as running:
                local.server = running
                yield local
        finally:
            local.shutdown()


def _replicas(dashboard: str) -> dict[str, list[tuple[str, str]]]:
    """{deployment: [(node id, state)]} of Triptych's replicas, from the dashboard's Serve REST API."""
    details = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json()
    deployments = details["applications"]["triptych"]["deployments"]
    return {name: [(r.get("node_id"), r["state"]) for r in d["replicas"]]  # no node yet while being scheduled
            for name, d in deployments.items()}


def _running_on(dashboard: str, deployment: str) -> set[str]:
    return {node for node, state in _replicas(dashboard).get(deployment, []) if state == "RUNNING"}


def _healthy() -> bool:
    """The application RUNNING with every deployment at its replica count (2 ingress, 1 of each stage)."""
    from ray import serve

    app = serve.status().applications.get("triptych")
    counts = running_replicas("triptych")
    return (app is not None and app.status == "RUNNING"
            and all(n == (2 if name == "TriptychIngress" else 1) for name, n in counts.items()))


def test_stages_run_on_the_nodes_that_offer_their_resources(cluster):
    vision, decoder = cluster.nodes["vision"].node_id, cluster.nodes["decoder"].node_id
    replicas = _replicas(cluster.dashboard)
    assert replicas["VisionEncoder"] == [(vision, "RUNNING")]
    assert replicas["LLMDecoder"] == [(decoder, "RUNNING")]
    head = cluster.head.node_id
    assert replicas["TextEncoder"] == [(head, "RUNNING")] and replicas["Denoiser"] == [(head, "RUNNING")]
    assert [state for _, state in replicas["TriptychIngress"]] == ["RUNNING"] * 2
    assert "CacheServer" not in replicas  # the external Redis: no embedded one


def _cache_events(ports: list[int]) -> dict[tuple[str, str], float]:
    """{(ingress replica, hits|misses): count} of vision-features lookups, summed over every node's scrape."""
    events: dict[tuple[str, str], float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                for event in ("hits", "misses"):
                    if (sample.name == f"ray_triptych_embedding_cache_{event}_total"
                            and labels.get("deployment") == "TriptychIngress" and labels.get("stage") == "vision"):
                        key = (labels["replica"], event)
                        events[key] = events.get(key, 0.0) + sample.value
    return events


def test_an_image_encoded_once_is_a_hit_on_every_ingress_replica(cluster):
    client = OpenAI(base_url=f"{cluster.server.http_url}/v1", api_key="unused", max_retries=0, timeout=120)
    image = image_bytes((200, 30, 90))

    def chat(i: int) -> bool:
        reply = client.chat.completions.create(model="", messages=[user_message(f"what is this? {i}", image)],
                                               max_tokens=8, extra_body={"temperature": 0.0})
        return reply.usage.model_extra["cache_hit"]

    hits, sent = [chat(0)], 1  # the first request encodes the image

    def reported():  # the scrape once Ray has reported every lookup sent so far
        events = _cache_events(cluster.metrics_ports)
        return events if sum(events.values()) == sent else None

    for wave in range(8):  # two chats at once (ingress max_ongoing_requests 1): one on each replica
        threads = [threading.Thread(target=lambda i=i: hits.append(chat(i))) for i in (2 * wave + 1, 2 * wave + 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent += 2
        events = _until(reported, "every lookup in the metrics", 60, 1.0)
        if len({replica for replica, _ in events}) == 2:
            break
    assert len({replica for replica, _ in events}) == 2, f"all chats went to one ingress replica: {events}"
    assert hits == [False] + [True] * (sent - 1)
    misses = {replica: n for (replica, event), n in events.items() if event == "misses"}
    assert sum(misses.values()) == 1 and sum(events.values()) == sent  # one miss in the whole cluster
    other = next(replica for replica, _ in events if replica not in misses)
    assert events[(other, "hits")] >= 1  # a replica that never encoded it read it from the shared Redis
    encoder = cluster.server.deployment_handle("VisionEncoder").stats.remote().result()
    assert encoder["images_encoded"] == 1
    decoder = cluster.server.deployment_handle("LLMDecoder").stats.remote().result()
    assert decoder["images_by_key"] >= sent - 1  # the decoder node read the features by key, too


def test_a_lost_decoder_node_is_replaced_and_requests_succeed_after(cluster):
    spare = cluster.add(NODES["decoder"])
    victim = cluster.nodes["decoder"]
    assert _running_on(cluster.dashboard, "LLMDecoder") == {victim.node_id}
    sender = HttpSender(cluster.server.http_url, timeout_s=60)
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 1.0}, repeat_fraction=1.0, pool_size=1,
                                                  max_tokens=8))
    done: list[Record] = []
    stop, runs = threading.Event(), []
    load = threading.Thread(target=lambda: runs.append(run_level(
        Level("closed", 2), generator.take(200), sender.send, max_seconds=DEADLINE_S * 2, stop=stop,
        on_done=done.append)))
    load.start()
    try:
        _until(lambda: sum(r.ok for r in done) >= 3, "chats before the node loss")
        cluster.remove(victim)
        _until(lambda: _running_on(cluster.dashboard, "LLMDecoder") == {spare.node_id} and _healthy(),
               "the decoder RUNNING on the spare decoder_node node, every deployment back")
        recovered = time.perf_counter()
        _until(lambda: sum(r.ok for r in done if r.scheduled_s > recovered) >= 4, "chats after the recovery")
    finally:
        stop.set()
        load.join()
        sender.close()
    after = [r for r in runs[0].records if r.scheduled_s > recovered]
    assert after and all(r.ok for r in after), {r.status for r in after}
    assert sum(r.ok for r in runs[0].records if r.scheduled_s <= recovered) >= 3
    assert _running_on(cluster.dashboard, "VisionEncoder") == {cluster.nodes["vision"].node_id}
