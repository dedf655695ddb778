"""Helpers for tests that run a real Triptych (Ray + Serve + embedded Redis) in-process."""

from __future__ import annotations

import base64
import io

from PIL import Image


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
