"""A training run's directory: a resumable checkpoint and the accuracy-vs-steps log.

    run = RunDir(Path("/tmp/toy-vlm-runs/curriculum"))
    start = run.restore(modules, optimizer, scheduler, rng)   # 0 when there is no checkpoint
    ...
    run.log({"step": 500, "val": {...}})                      # one JSON line in metrics.jsonl
    run.save(step, modules, optimizer, scheduler, rng)        # atomic: a crash never leaves half a file

The checkpoint holds every module's state, the optimizer, the LR schedule, the Python RNG and the
run's accumulated wall and CPU seconds, so a resumed run continues the same data stream and its
logged times add up across restarts. Records logged after the checkpoint's step (by a run that was
stopped before its next checkpoint) are dropped on resume, so the log never holds a step twice.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class RunDir:
    """Checkpoint + metrics log under one directory; keeps the run's clock across restarts."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._wall_before = self._cpu_before = 0.0

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds this run has trained, over all its restarts."""
        return (self._wall_before + time.perf_counter() - self._wall0,
                self._cpu_before + time.process_time() - self._cpu0)  # fmt: skip

    def clear(self) -> None:
        """Forget a previous run in this directory (its checkpoint and log)."""
        self.checkpoint.unlink(missing_ok=True)
        self.metrics.unlink(missing_ok=True)

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizer, scheduler, rng: random.Random) -> None:
        """Write the state after ``step`` steps (to a temporary file, then renamed over the old one)."""
        wall, cpu = self.seconds()
        state = {"step": step, "wall_s": wall, "cpu_s": cpu, "rng": rng.getstate(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "modules": {name: m.state_dict() for name, m in modules.items()}}  # fmt: skip
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    def restore(self, modules: dict[str, torch.nn.Module], optimizer, scheduler, rng: random.Random) -> int:
        """Load the checkpoint into the given objects and return its step; 0 (nothing loaded) without one."""
        if not self.checkpoint.is_file():
            return 0
        state = torch.load(self.checkpoint, weights_only=False)  # our own file: holds the RNG tuple
        if set(state["modules"]) != set(modules):
            raise ValueError(f"{self.checkpoint} holds modules {sorted(state['modules'])}, expected {sorted(modules)}")
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        self._wall_before, self._cpu_before = state["wall_s"], state["cpu_s"]
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        kept = [r for r in self.records() if r["step"] <= state["step"]]
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return state["step"]

    def load_modules(self, modules: dict[str, torch.nn.Module]) -> None:
        """Load only the weights of this directory's checkpoint (to start another run from them)."""
        state = torch.load(self.checkpoint, weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])

    def log(self, record: dict) -> None:
        """Append one record (it must carry ``step``), with the run's wall and CPU seconds so far."""
        wall, cpu = self.seconds()
        with self.metrics.open("a") as f:
            f.write(json.dumps({**record, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}) + "\n")

    def records(self) -> list[dict]:
        """Every logged record, in order."""
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
