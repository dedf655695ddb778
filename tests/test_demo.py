"""`triptych demo` (what `make demo` runs) in its own process, on the default profile (the shipped toy
models): it answers every question right (the second time from the embedding cache), generates an
image the oracle accepts, saves it and exits 0."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from triptych.ports import free_port


def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "TRIPTYCH_MODEL_DIR": str(tmp_path / "models"), "REDIS_URL": ""}
    env.pop("TRIPTYCH_PROFILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "demo", "--http-port", str(free_port()),
         "--grpc-port", str(free_port())],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    hits = [line.split("cache_hit=")[1].split()[0] for line in done.stdout.splitlines() if "cache_hit=" in line]
    assert hits[:2] == ["False", "True"] and len(hits) == 4
    assert done.stdout.count("oracle: right") == 4 and "oracle: accepted" in done.stdout, done.stdout
    assert Image.open(tmp_path / "out" / "demo-generated.png").format == "PNG"
    assert "Done in" in done.stdout and Path(tmp_path / "out").is_dir()
