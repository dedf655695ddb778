"""A free TCP port on the loopback interface (for embedded servers, tests and benchmarks)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS had free a moment ago; the caller binds it soon after.

    Between this pick and the caller's bind another process may take the port. Where the server can bind
    port 0 and report what it got, do that instead (the in-process gRPC servers of the tests do). Serve's
    proxy cannot report a port it picked, so a taken port is detected and retried instead: its bind fails
    (`deployments.server` turns SO_REUSEPORT off, which would otherwise share the port silently), the
    start-up raises `ProxyError`, and `tests.serving.serving_on_free_ports` starts again on fresh ports;
    `cache.EmbeddedRedis` retries its own bind the same way."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
