"""Helpers for tests that run a real Triptych (Ray + Serve + embedded Redis) in-process."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from PIL import Image

PORT_ATTEMPTS = 3


def image_bytes(color: tuple[int, int, int], size=(48, 48), fmt="PNG") -> bytes:
    """A small image whose bytes are unique per colour (so each colour is a fresh cache key)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user_message(text: str, *images: bytes) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def require_own_ray(module: str) -> None:
    """An `own_ray` module starts Ray in this process: fail clearly if another module's server runs."""
    import pytest
    import ray

    if ray.is_initialized():
        pytest.fail(f"{module} starts its own Ray, but one is already running in this process "
                    "(another module's server): run this module first or on its own")


@contextmanager
def serving_on_free_ports(make_config: Callable[[int, int], object], **options) -> Iterator:
    """`deployments.server.serving(make_config(http_port, grpc_port), **options)` on free ports, started
    again on fresh ones when its proxy could not bind them (`ProxyError`: another process took a port
    between `free_port()` and the proxy's bind, the pick-then-release race); at most PORT_ATTEMPTS starts."""
    from deployments.server import ProxyError, serving
    from triptych.ports import free_port

    for attempt in range(1, PORT_ATTEMPTS + 1):
        started = serving(make_config(free_port(), free_port()), **options)
        try:
            running = started.__enter__()
        except ProxyError:
            if attempt == PORT_ATTEMPTS:
                raise
            continue  # `serving` stopped what it started before raising
        try:
            yield running
        finally:
            started.__exit__(None, None, None)
        return
