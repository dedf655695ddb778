"""When the load benchmark sends its requests: open loop (Poisson arrivals at a target rate, as vLLM's
serving benchmark does) or closed loop (N users, each sending its next request when the last ends).

A level is bounded twice: at most ``len(specs)`` requests, and none *started* after ``max_seconds``;
requests in flight then finish (each is bounded by its sender's timeout). ``stop`` (a
``threading.Event``) ends a level early, as the autoscaling test does once the replicas scaled up.
Open-loop requests start at their arrival time whatever is in flight (up to ``max_inflight`` threads;
past that they wait, and that wait counts in their latency).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchmarks.load_transports import Record
from benchmarks.load_workload import RequestSpec

Send = Callable[[RequestSpec, float], Record]  # (spec, scheduled perf_counter) -> Record
OnDone = Callable[[Record], None]


@dataclass(frozen=True)
class Level:
    """One load level: ``mode`` "open" (``value`` = requests/s) or "closed" (``value`` = concurrency)."""

    mode: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.value:g} req/s" if self.mode == "open" else f"{self.value:g} users"


@dataclass
class LevelRun:
    """What one level produced: its records and the seconds from its start to its last completion."""

    level: Level
    records: list[Record]
    started_s: float  # perf_counter
    duration_s: float


def poisson_offsets(rate: float, n: int, seed: int) -> list[float]:
    """``n`` arrival times (seconds from the start) of a Poisson process at ``rate`` per second."""
    rng = random.Random(seed)
    return list(itertools.accumulate(rng.expovariate(rate) for _ in range(n)))


def run_level(level: Level, specs: Sequence[RequestSpec], send: Send, *, max_seconds: float,
              max_inflight: int = 64, seed: int = 0, on_done: OnDone | None = None,
              stop: threading.Event | None = None) -> LevelRun:
    """Send ``specs`` at ``level``; returns every request's record (completion order)."""
    stop = stop or threading.Event()
    records: list[Record] = []
    lock = threading.Lock()

    def finish(record: Record) -> None:
        with lock:
            records.append(record)
        if on_done:
            on_done(record)

    def attempt(spec: RequestSpec, scheduled: float) -> Record:
        try:
            return send(spec, scheduled)
        except Exception as exc:  # noqa: BLE001 - a client-side bug: counted under its name, never lost
            return Record(spec.index, spec.kind, "", scheduled, status=type(exc).__name__, error=str(exc)[:200],
                          e2e_s=time.perf_counter() - scheduled)

    start = time.perf_counter()
    if level.mode == "open":
        _open_loop(level.value, specs, attempt, finish, start, max_seconds, max_inflight, seed, stop)
    else:
        _closed_loop(int(level.value), specs, attempt, finish, start, max_seconds, stop)
    ends = [r.scheduled_s + r.e2e_s for r in records]
    return LevelRun(level, records, start, (max(ends) - start) if ends else 0.0)


def _open_loop(rate, specs, send, finish, start, max_seconds, max_inflight, seed, stop) -> None:
    with ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="load-open") as pool:
        for spec, offset in zip(specs, poisson_offsets(rate, len(specs), seed)):
            if offset > max_seconds or stop.wait(max(0.0, start + offset - time.perf_counter())):
                break  # the wait returns True only when stopped
            scheduled = start + offset
            pool.submit(lambda s=spec, t=scheduled: finish(send(s, t)))


def _closed_loop(users, specs, send, finish, start, max_seconds, stop) -> None:
    queue = iter(specs)
    lock = threading.Lock()

    def user() -> None:
        while not stop.is_set() and time.perf_counter() - start <= max_seconds:
            with lock:
                spec = next(queue, None)
            if spec is None:
                return
            finish(send(spec, time.perf_counter()))

    threads = [threading.Thread(target=user, name=f"load-user-{i}", daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
