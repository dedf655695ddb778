"""Each deployment's replica count over time, read from ``serve.status()`` while the load runs.

Works in the process that started Serve, or in one connected to the cluster with ``ray.init(address)``
(``benchmarks.load --ray-address``). A replica counts once it is RUNNING; STARTING ones are kept
beside, so a plot separates the autoscaler's decision from the replica's start-up time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Self


def replica_states(app_name: str) -> dict[str, dict[str, int]]:
    """{deployment: {replica state: count}} of one application, from ``serve.status()``."""
    from ray import serve

    application = serve.status().applications.get(app_name)
    if application is None:
        return {}
    return {name: {str(state.value if hasattr(state, "value") else state): n
                   for state, n in deployment.replica_states.items()}
            for name, deployment in application.deployments.items()}


def running_replicas(app_name: str) -> dict[str, int]:
    """{deployment: RUNNING replicas} of one application."""
    return {name: states.get("RUNNING", 0) for name, states in replica_states(app_name).items()}


@dataclass(frozen=True)
class ReplicaSample:
    t_s: float  # perf_counter
    counts: dict[str, int]  # RUNNING
    starting: dict[str, int]  # STARTING


class ReplicaSampler:
    """A daemon thread that samples ``replica_states(app_name)`` every ``interval_s``."""

    def __init__(self, app_name: str, interval_s: float = 0.5):
        self.app_name, self.interval_s = app_name, interval_s
        self.samples: list[ReplicaSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._sample()  # the first sample before returning: ``latest()`` is the state at the start
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> dict[str, int]:
        return self.samples[-1].counts if self.samples else {}

    def _sample(self) -> None:
        states = replica_states(self.app_name)
        self.samples.append(ReplicaSample(time.perf_counter(),
                                          {name: s.get("RUNNING", 0) for name, s in states.items()},
                                          {name: s.get("STARTING", 0) for name, s in states.items()}))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()
        self._sample()
