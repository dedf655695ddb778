"""The suite runs on its own Ray and its own Redis: an operator's REDIS_URL or RAY_ADDRESS in the shell
must not reach a test (tests/conftest.py removes them for the session). Shown in a subprocess pytest
started with both set to addresses nothing listens on."""

import os
import subprocess
import sys
from pathlib import Path

from triptych.config import TriptychConfig

ROOT = Path(__file__).resolve().parents[1]
PROBE_FLAG = "TRIPTYCH_ISOLATION_PROBE"  # set only in the subprocess below


OUTSIDE_ENV = ("REDIS_URL", "RAY_ADDRESS")


def test_the_outside_cluster_and_cache_are_not_in_the_environment(cleared_env):
    assert not set(OUTSIDE_ENV) & set(os.environ)
    assert TriptychConfig(profile="tiny").cache.redis_url is None  # the app's embedded Redis
    if os.environ.get(PROBE_FLAG):  # in the subprocess: they were there, and conftest took them out
        assert cleared_env == {"REDIS_URL": "redis://192.0.2.1:6379/0", "RAY_ADDRESS": "192.0.2.1:6379"}


def test_a_shell_with_redis_url_and_ray_address_does_not_leak_in():
    env = {**os.environ, "REDIS_URL": "redis://192.0.2.1:6379/0", "RAY_ADDRESS": "192.0.2.1:6379", PROBE_FLAG: "1"}
    probe = f"{Path(__file__).relative_to(ROOT)}::test_the_outside_cluster_and_cache_are_not_in_the_environment"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", probe], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
