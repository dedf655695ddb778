"""Deployment options turn into the right Serve settings; bad values are refused at construction."""

import pytest
from pydantic import ValidationError

from triptych.config import DeploymentOptions, TriptychConfig


def test_fixed_replicas_without_autoscaling():
    options = DeploymentOptions(min_replicas=2, max_replicas=2, num_cpus=0.2).serve_options()
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.2}


def test_autoscaling_when_max_exceeds_min():
    options = DeploymentOptions(min_replicas=1, max_replicas=4, target_ongoing_requests=3).serve_options()
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}
    assert "num_replicas" not in options


def test_backpressure_and_threads_are_passed_on():
    options = DeploymentOptions(max_ongoing_requests=3, max_queued_requests=5, torch_threads=2).serve_options()
    assert (options["max_ongoing_requests"], options["max_queued_requests"]) == (3, 5)
    assert options["ray_actor_options"]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("kwargs", [{"min_replicas": 3, "max_replicas": 2}, {"num_cpus": 0}, {"torch_threads": 0}])
def test_invalid_options_rejected(kwargs):
    with pytest.raises(ValidationError):
        DeploymentOptions(**kwargs)


def test_environment_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIPTYCH_PROFILE", "bench")
    monkeypatch.setenv("TRIPTYCH_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    config = TriptychConfig()
    assert (config.profile, config.model_dir, config.cache.redis_url) == ("bench", tmp_path, "redis://example:6379/0")
    monkeypatch.delenv("REDIS_URL")
    assert TriptychConfig().cache.redis_url is None


def test_default_profile_is_the_shipped_toy_models(monkeypatch):
    from models.profiles import resolve_chat_model, resolve_image_model
    from toy import CHECKPOINTS

    monkeypatch.delenv("TRIPTYCH_PROFILE", raising=False)
    config = TriptychConfig()
    assert config.profile == "toy"
    assert resolve_chat_model(config.profile, config.model_dir) == CHECKPOINTS / "toy-vlm"
    assert resolve_image_model(config.profile, config.model_dir) == CHECKPOINTS / "toy-sd"
