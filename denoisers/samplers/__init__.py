"""Sampler registry: one name per sampling recipe; adding one is a new file plus one line here.

``make_scheduler("dpmpp_2m", pipeline.scheduler.config)`` gives a fresh DPMSolverMultistepScheduler
on that checkpoint's noise schedule; ``get_sampler(name)`` gives the whole recipe (``Sampler``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import SchedulerMixin

from triptych.errors import RequestError

from . import ddim, dpmpp_2m, euler, lcm, unipc
from .base import Sampler

SAMPLERS: dict[str, Sampler] = {
    s.name: s for s in (ddim.SAMPLER, euler.SAMPLER, dpmpp_2m.SAMPLER, unipc.SAMPLER, lcm.SAMPLER)
}

__all__ = ["SAMPLERS", "Sampler", "get_sampler", "make_scheduler"]


def get_sampler(name: str, field: str = "sampler") -> Sampler:
    """The sampler called ``name``; RequestError(field) listing the valid names otherwise."""
    sampler = SAMPLERS.get(name) if isinstance(name, str) else None
    if sampler is None:
        raise RequestError(field, f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    return sampler


def make_scheduler(name: str, base_config: Mapping[str, Any], field: str = "sampler") -> SchedulerMixin:
    """A new scheduler for sampler ``name`` on the noise schedule of ``base_config`` (a checkpoint's)."""
    return get_sampler(name, field).make_scheduler(base_config)
