"""`triptych demo` (what `make demo` runs) in its own process, on the default profile (the shipped toy
models): it answers four questions (the first one twice, the second time from the embedding cache, with
the same answer), generates an image the oracle accepts, saves it and exits 0.

The toy VLM answers about 69% of held-out questions right (README), so the test keeps a margin: at least
half of the four answers right, not all of them (a retrained checkpoint may miss one it got before)."""

import os
import re
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
    answers = re.findall(r"^\[\d\] triptych: (.*)$", done.stdout, flags=re.MULTILINE)
    verdicts = re.findall(r"^    oracle: (right|wrong)", done.stdout, flags=re.MULTILINE)
    assert len(answers) == len(verdicts) == 4 and answers[0] == answers[1], done.stdout  # the hit answers alike
    assert verdicts.count("right") >= 2 and "oracle: accepted" in done.stdout, done.stdout
    assert Image.open(tmp_path / "out" / "demo-generated.png").format == "PNG"
    assert "Done in" in done.stdout and Path(tmp_path / "out").is_dir()
