"""Helpers for the chaos tests: traffic from the load generator in a background thread that a test steers
by completion counts, per-replica stage stats, and the replica actors to kill. Everything is bounded: a
wait has a deadline (a generous one: it only ends a hung test) and a load run has a request budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

from benchmarks.load_drivers import Level, run_level
from benchmarks.load_transports import Record
from benchmarks.load_workload import RequestSpec

WAIT_S = 180.0  # the longest any condition below is waited for


def wait_until(condition: Callable[[], object], what: str, deadline_s: float = WAIT_S, poll_s: float = 0.1):
    """Poll `condition` until it returns something truthy (returned); fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {deadline_s:.0f} s"
        time.sleep(poll_s)  # the poll period of a condition loop with a deadline


@dataclass
class LoadRun:
    """Closed-loop users sending `specs` through `send` in a background thread (the load generator's own
    driver). A test waits for completion counts (`wait_done`), acts, and `finish`es the run."""

    specs: Sequence[RequestSpec]
    send: Callable[[RequestSpec, float], Record]
    users: int
    max_seconds: float = 600.0
    records: list[Record] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._count = 0
        self._runs: list = []
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def _run(self) -> None:
        self._runs.append(run_level(Level("closed", self.users), self.specs, self.send,
                                    max_seconds=self.max_seconds, on_done=self._on_done, stop=self._stop))

    def _on_done(self, record: Record) -> None:
        with self._done:
            self._count += 1
            self.records.append(record)
            self._done.notify_all()

    @property
    def count(self) -> int:
        with self._done:
            return self._count

    def wait_done(self, n: int, what: str) -> None:
        """Block until `n` requests have completed in all (ok or not)."""
        with self._done:
            assert self._done.wait_for(lambda: self._count >= n or not self._thread.is_alive(), WAIT_S), (
                f"{what}: only {self._count} of {n} requests done within {WAIT_S:.0f} s")
            assert self._count >= n, f"{what}: the load ran out of requests at {self._count} (< {n})"

    def finish(self) -> list[Record]:
        """Start no more requests, let those in flight end, return every record."""
        self._stop.set()
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "the load did not end"
        return list(self.records)


def in_flight_at(records: Sequence[Record], t: float) -> list[Record]:
    """The requests that had started and not yet ended at perf_counter `t`."""
    return [r for r in records if r.scheduled_s <= t <= r.scheduled_s + r.e2e_s]


def started_after(records: Sequence[Record], t: float) -> list[Record]:
    return [r for r in records if r.scheduled_s > t]


def replica_actor_names(app_name: str, deployment: str) -> list[str]:
    """The Ray actor names of one deployment's live replicas (Serve names them SERVE_REPLICA::app#dep#id)."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def kill_one_replica(app_name: str, deployment: str) -> str:
    """`ray.kill` one replica actor of `deployment` (no restart: Serve's controller must replace it)."""
    import ray

    name = replica_actor_names(app_name, deployment)[0]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


def running_replica_ids(app_name: str, deployment: str) -> set[str]:
    """The RUNNING replicas of one deployment, by replica id, from `serve.status()`-level details."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = details["applications"][app_name]["deployments"][deployment]["replicas"]
    return {r["replica_id"] for r in replicas if r["state"] == "RUNNING"}


def stats_per_replica(handle, replicas: int, attempts: int = 200) -> dict[str, dict]:
    """`stats()` of each of a deployment's `replicas` replicas, keyed by replica id: asked through the
    handle (Serve picks a replica per call) until every replica has answered, at most `attempts` calls."""
    seen: dict[str, dict] = {}
    for _ in range(attempts):
        stats = handle.stats.remote().result()
        seen[stats["replica"]] = stats
        if len(seen) == replicas:
            return seen
    raise AssertionError(f"only {len(seen)} of {replicas} replicas answered in {attempts} stats calls")
