"""Per-stage wall-clock timings reported to clients as `timings_ms`."""

from __future__ import annotations

import time
from contextlib import contextmanager


class StageTimings:
    """Accumulates milliseconds per stage name; a stage that never ran has no entry."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1000.0)

    def add(self, name: str, ms: float) -> None:
        self.ms[name] = round(self.ms.get(name, 0.0) + ms, 3)
