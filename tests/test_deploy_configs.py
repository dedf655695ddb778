"""The Serve config files in deploy/: Ray's own schema accepts them, the builder builds them with the
options they ask for, and every bad file is refused with its key path before anything starts."""

from pathlib import Path

import pytest
import yaml
from ray.serve._private.build_app import build_app as serve_build_app
from ray.serve.schema import ServeDeploySchema

from deployments.app import app_builder
from deployments.serve_config import BUILDER, load_serve_config, serve_config_for
from launcher.cli import main
from triptych.config import ConfigError, TriptychConfig, load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FILES = ["local.yaml", "gpu.yaml", "cluster.yaml"]


def _triptych_app(raw: dict) -> dict:
    return next(app for app in raw["applications"] if app["import_path"] == BUILDER)


def _built(args: dict, tmp_path) -> dict:
    """{deployment name: Deployment} of the app the builder makes from `args` (tiny models, for speed)."""
    app = app_builder({**args, "profile": "tiny", "model_dir": str(tmp_path)})
    return {d.name: d for d in serve_build_app(app, name="triptych").deployments}


@pytest.mark.parametrize("name", FILES)
def test_file_passes_rays_schema_and_the_builder(name, tmp_path):
    raw = yaml.safe_load((DEPLOY / name).read_text())
    ServeDeploySchema.model_validate(raw)
    _, configs = load_serve_config(DEPLOY / name)
    assert list(configs) == ["triptych"]
    deployments = _built(_triptych_app(raw)["args"], tmp_path)
    expected = {"TriptychIngress", "VisionEncoder", "LLMDecoder", "TextEncoder", "Denoiser", "Embedder"}
    assert expected <= set(deployments)


def test_local_file_is_the_toy_profile_on_fractional_cpus_with_its_own_redis(tmp_path):
    _, configs = load_serve_config(DEPLOY / "local.yaml")
    config = configs["triptych"]
    assert config.profile == "toy" and config.cache.redis_url is None
    deployments = _built(_triptych_app(yaml.safe_load((DEPLOY / "local.yaml").read_text()))["args"], tmp_path)
    assert "CacheServer" in deployments  # the embedded Redis belongs to the application
    assert all(d.ray_actor_options["num_cpus"] < 1 for d in deployments.values())


def test_gpu_file_shares_one_gpu_between_the_stages(tmp_path):
    raw = yaml.safe_load((DEPLOY / "gpu.yaml").read_text())
    deployments = _built(_triptych_app(raw)["args"], tmp_path)
    gpu_stages = ("VisionEncoder", "LLMDecoder", "Denoiser", "Embedder")
    shares = {name: deployments[name].ray_actor_options.get("num_gpus", 0) for name in gpu_stages}
    assert all(0 < share < 1 for share in shares.values()) and sum(shares.values()) <= 1
    devices = {name: deployments[name].init_args[-1] for name in gpu_stages}
    assert devices == dict.fromkeys(devices, "cuda")  # a stage with a GPU share runs its engine there
    assert deployments["TextEncoder"].init_args[-1] == "cpu"


def test_cluster_file_pins_stages_to_node_types_and_uses_an_external_redis(tmp_path):
    raw = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    args = _triptych_app(raw)["args"]
    assert args["cache"]["redis_url"].startswith("redis://")
    deployments = _built(args, tmp_path)
    assert "CacheServer" not in deployments
    pins = {name: set(deployments[name].ray_actor_options.get("resources", {}))
            for name in ("VisionEncoder", "LLMDecoder", "Denoiser", "Embedder")}
    assert pins == {"VisionEncoder": {"vision_node"}, "LLMDecoder": {"decoder_node"},
                    "Denoiser": {"denoiser_node"}, "Embedder": {"vision_node"}}
    decoder = deployments["LLMDecoder"]._deployment_config.autoscaling_config
    assert (decoder.min_replicas, decoder.max_replicas) == (1, 8)


def test_autoscaling_knobs_reach_serve(tmp_path):
    args = {"llm_decoder": {"min_replicas": 1, "max_replicas": 3, "metrics_interval_s": 0.5,
                            "look_back_period_s": 2, "upscale_delay_s": 0, "downscale_delay_s": 5}}
    scaling = _built(args, tmp_path)["LLMDecoder"]._deployment_config.autoscaling_config
    assert (scaling.metrics_interval_s, scaling.look_back_period_s) == (0.5, 2)
    assert (scaling.upscale_delay_s, scaling.downscale_delay_s) == (0, 5)


def test_plain_config_round_trips_through_its_serve_config():
    config = TriptychConfig(profile="tiny", http_port=8123, grpc_port=9123)
    schema = serve_config_for(config)
    assert (schema.http_options.port, schema.grpc_options.port) == (8123, 9123)
    assert load_config(schema.applications[0].args) == config


@pytest.mark.parametrize("args, problem", [
    ({"llm_decoder": {"min_replicas": 3, "max_replicas": 2}}, "llm_decoder.max_replicas: must be >= min_replicas"),
    ({"ingress": {"num_cpu": 1}}, "ingress.num_cpu: unknown key"),
    ({"colour": "blue"}, "colour: unknown key"),
    ({"denoiser": {"max_ongoing_requests": "many"}}, "denoiser.max_ongoing_requests: Input should be a valid integer"),
    ({"cache": {"ttl_s": 0}}, "cache.ttl_s: Input should be greater than or equal to 1"),
])
def test_bad_args_name_the_key_path(args, problem):
    with pytest.raises(ConfigError) as caught:
        app_builder(args)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def _bad_file(tmp_path, mutate) -> Path:
    raw = yaml.safe_load((DEPLOY / "local.yaml").read_text())
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate, problem", [
    (lambda raw: _triptych_app(raw)["args"]["llm_decoder"].update(max_replicas=0, min_replicas=1),
     "applications[0].args.llm_decoder.max_replicas"),
    (lambda raw: _triptych_app(raw)["args"].update(profle="toy"), "applications[0].args.profle: unknown key"),
    (lambda raw: raw["http_options"].update(port="eighty"), "http_options.port"),
    (lambda raw: raw.update(applicatons=raw.pop("applications")), "applicat"),
])
def test_bad_file_is_refused_with_the_key_path_before_anything_starts(tmp_path, capsys, monkeypatch,
                                                                      mutate, problem):
    import deployments.server

    def never(*args, **kwargs):
        raise AssertionError("serving() was called for a bad config file")

    monkeypatch.setattr(deployments.server, "serving", never)  # refused before Ray, let alone a replica
    path = _bad_file(tmp_path, mutate)
    with pytest.raises(ConfigError) as caught:
        load_serve_config(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid Triptych configuration") and problem in err


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_serve_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("applications: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_serve_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize("args, problem", [
    ({"chat": {"temperature": 3}}, "chat.temperature: 3.0 is outside 0..2"),
    ({"chat": {"pruning_method": "magic"}}, "chat.pruning_method"),
    ({"chat": {"max_tokens": 2000}}, "chat.max_tokens"),
    ({"images": {"steps": 200}}, "images.steps"),
    ({"images": {"width": 60}}, "images.size"),
])
def test_server_defaults_obey_the_request_rules(args, problem, tmp_path):
    """A default that every request omitting the field would fail on is a config error, not a 400 later."""
    with pytest.raises(ConfigError) as caught:
        app_builder(args)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    raw = yaml.safe_load((DEPLOY / "local.yaml").read_text())
    _triptych_app(raw)["args"].update(args)
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=problem.split(":")[0].replace(".", r"\.")):
        load_serve_config(path)
