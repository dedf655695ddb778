"""deploy/kuberay/rayservice.yaml: its serveConfigV2 is deploy/cluster.yaml, Ray's schema accepts it, and
every resource a deployment asks for (custom node resources, GPUs, CPUs) is offered by some worker group."""

import json
from pathlib import Path

import pytest
import yaml
from ray.serve._private.build_app import build_app as serve_build_app
from ray.serve.schema import ServeDeploySchema

from deployments.app import app_builder

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def _offers(group: dict) -> dict[str, float]:
    """What a worker group's Ray node offers: CPU, GPU and its custom resources."""
    params = group["rayStartParams"]
    offers = {"CPU": float(params.get("num-cpus", 0)), "GPU": float(params.get("num-gpus", 0))}
    if "resources" in params:
        offers.update(json.loads(json.loads(params["resources"])))  # KubeRay's quoted JSON string
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert float(limits.get("nvidia.com/gpu", 0)) >= offers["GPU"], group["groupName"]  # the pod has them
    return offers


def test_serve_config_is_the_cluster_file_and_passes_rays_schema(manifest):
    serve_config = yaml.safe_load(manifest["RayService"]["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    ServeDeploySchema.model_validate(serve_config)


def test_autoscaling_worker_groups_and_the_cache_redis(manifest):
    cluster = manifest["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert 0 < group["minReplicas"] <= group["maxReplicas"], group["groupName"]
    groups = {g["groupName"]: _offers(g) for g in cluster["workerGroupSpecs"]}
    assert any(o["GPU"] == 0 for o in groups.values()) and any(o["GPU"] > 0 for o in groups.values())
    serve_config = yaml.safe_load(manifest["RayService"]["spec"]["serveConfigV2"])
    redis_url = serve_config["applications"][0]["args"]["cache"]["redis_url"]
    assert manifest["Service"]["metadata"]["name"] in redis_url  # the embedding cache's Redis is in the manifest
    assert manifest["Deployment"]["metadata"]["name"] == manifest["Service"]["metadata"]["name"]


def test_every_deployment_fits_some_worker_group(manifest, tmp_path):
    cluster = manifest["RayService"]["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: _offers(g) for g in cluster["workerGroupSpecs"]}
    args = yaml.safe_load(manifest["RayService"]["spec"]["serveConfigV2"])["applications"][0]["args"]
    app = app_builder({**args, "profile": "tiny", "model_dir": str(tmp_path)})  # the options, not the models
    for deployment in serve_build_app(app, name="triptych").deployments:
        options = deployment.ray_actor_options
        asks = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0), **options.get("resources", {})}
        fits = [name for name, offers in groups.items() if all(offers.get(k, 0) >= v for k, v in asks.items())]
        assert fits, f"{deployment.name} asks {asks}; no worker group offers it: {groups}"
