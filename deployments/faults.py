"""Test-only faults (`triptych.config.FaultInjection`), honoured by the stage deployments; each is inert
unless the config sets it, so production replicas never wait at a gate or fail on purpose."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from triptych.config import FaultInjection

GATE_POLL_S = 0.02  # how often gated work looks for the gate file
GATE_TIMEOUT_S = 120.0  # a gate nobody opens lets the work through after this
NO_FAULTS = FaultInjection()


class InjectedFault(RuntimeError):
    """The failure `FaultInjection.fail_seed` asked for."""


def _closed(faults: FaultInjection) -> bool:
    return faults.gate_file is not None and not os.path.exists(faults.gate_file)


async def pass_gate(faults: FaultInjection, gated: bool) -> None:
    """When `gated`, wait (on the event loop, cancellable) until the gate file exists."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while gated and _closed(faults) and time.monotonic() < deadline:
        await asyncio.sleep(GATE_POLL_S)


def pass_gate_in_thread(faults: FaultInjection, gated: bool, cancelled: threading.Event) -> None:
    """`pass_gate` for a worker thread: also stops waiting once `cancelled` is set."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while gated and _closed(faults) and not cancelled.is_set() and time.monotonic() < deadline:
        time.sleep(GATE_POLL_S)


def gated_seed(faults: FaultInjection, seed: int | None) -> bool:
    return faults.gate_seed is not None and seed == faults.gate_seed


def fail_after_first_event(faults: FaultInjection, seed: int | None, stage: str) -> None:
    """Raise `InjectedFault` when the request's seed is the configured `fail_seed`."""
    if faults.fail_seed is not None and seed == faults.fail_seed:
        raise InjectedFault(f"injected {stage} failure after the first event (fail_seed {seed})")
