"""Each deployment's replica count over time, read from ``serve.status()`` while the load runs.

Works in the process that started Serve, or in one connected to the cluster with ``ray.init(address)``
(``benchmarks.load --ray-address``). A replica counts once it is RUNNING.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Self


def running_replicas(app_name: str) -> dict[str, int]:
    """{deployment: RUNNING replicas} of one application, from ``serve.status()``'s replica_states."""
    from ray import serve

    application = serve.status().applications.get(app_name)
    if application is None:
        return {}
    return {name: deployment.replica_states.get("RUNNING", 0)
            for name, deployment in application.deployments.items()}


@dataclass(frozen=True)
class ReplicaSample:
    t_s: float  # perf_counter
    counts: dict[str, int]


class ReplicaSampler:
    """A daemon thread that samples ``running_replicas(app_name)`` every ``interval_s``."""

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
        self.samples.append(ReplicaSample(time.perf_counter(), running_replicas(self.app_name)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()
        self._sample()
