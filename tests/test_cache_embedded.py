"""cache.embedded: a real redis-server child process, configured as an LRU cache, reachable over TCP."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import redis

from cache.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_find_redis_server_is_executable():
    path = find_redis_server()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    assert "Redis server" in out


def test_start_ping_config_stop():
    server = EmbeddedRedis(maxmemory_mb=32).start()
    try:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("maxmemory") == {"maxmemory": str(32 * 1024 * 1024)}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
    finally:
        port = server.port
        server.stop()
    assert not server.running
    assert not _port_open(port)
    with pytest.raises(EmbeddedRedisError):
        server.url  # noqa: B018 - not started any more
    server.stop()  # idempotent


def test_reachable_from_another_process():
    with EmbeddedRedis() as server:
        redis.Redis.from_url(server.url).set("from-parent", b"ok")
        code = (
            "import socket,sys;"
            f"s=socket.create_connection(('127.0.0.1',{server.port}),timeout=5);"
            "s.sendall(b'GET from-parent\\r\\n');"
            "sys.stdout.write(repr(s.recv(64)))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert out == repr(b"$2\r\nok\r\n")


def test_context_manager_stops_on_exit():
    with EmbeddedRedis() as server:
        port = server.port
        assert _port_open(port)
    assert not _port_open(port)


def test_restart_on_same_port_keeps_url():
    server = EmbeddedRedis().start()
    port, url = server.port, server.url
    server.stop()
    again = EmbeddedRedis(port=port).start()
    try:
        assert again.url == url
        assert redis.Redis.from_url(url).ping()
    finally:
        again.stop()


def test_port_taken_by_another_server_is_an_error():
    with EmbeddedRedis() as first:
        with pytest.raises(EmbeddedRedisError, match=str(first.port)):
            EmbeddedRedis(port=first.port, startup_timeout_s=5).start()
        assert redis.Redis.from_url(first.url).ping()  # the other server is untouched


def test_server_dies_with_its_owner_process(tmp_path):
    """A SIGKILLed owner (how Ray stops a replica) leaves no orphaned redis-server behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "from cache.embedded import EmbeddedRedis; import sys, time; r = EmbeddedRedis().start(); "
        "print(r.port, r._proc.pid, flush=True); time.sleep(600)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    port, pid = (int(x) for x in owner.stdout.readline().split())
    assert redis.Redis(port=port).ping()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("redis-server outlived its owner")
