"""`triptych serve` runs in its own process until Ctrl-C (SIGINT), then stops everything it started."""

import os
import signal
import subprocess
import sys

import httpx

from triptych.ports import free_port


def test_serve_until_ctrl_c(tmp_path):
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "TRIPTYCH_MODEL_DIR": str(tmp_path / "models"), "REDIS_URL": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "serve", "--profile", "tiny", "--http-port", str(http_port),
         "--grpc-port", str(grpc_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        for line in process.stdout:  # bounded by pytest-timeout
            lines.append(line)
            if line.startswith("open http"):  # printed after "Triptych is serving"
                break
        assert lines[-1].strip() == f"open http://127.0.0.1:{http_port}/"
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10).status_code == 200
        assert "<title>Triptych</title>" in httpx.get(f"http://127.0.0.1:{http_port}/", timeout=10).text
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        output = "".join(lines) + rest
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Triptych is serving" in output and "Triptych stopped." in output
    try:
        httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
        raise AssertionError("still serving after Ctrl-C")
    except httpx.HTTPError:
        pass
