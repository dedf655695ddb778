"""Test-wide settings (never touch a model hub; Ray local) and the one running Triptych the Serve
tests share: Ray + Serve + an embedded Redis start once per session, on free ports, and stop at the end."""

import os

import pytest
from openai import OpenAI

from triptych.client import TriptychClient
from triptych.config import DeploymentOptions, TriptychConfig
from triptych.ports import free_port
from triptych.server import serving

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    config = TriptychConfig(
        profile="tiny",
        model_dir=tmp_path_factory.mktemp("models"),
        http_port=free_port(),
        grpc_port=free_port(),
        # Small limits so the overload test can fill them; every other test stays below.
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=4, max_queued_requests=4),
        vision_encoder=DeploymentOptions(num_cpus=0.2),
        llm_decoder=DeploymentOptions(num_cpus=0.2, max_ongoing_requests=8),
    )
    with serving(config, quiet=True) as running:
        yield running


@pytest.fixture(scope="session")
def openai_client(server):
    return OpenAI(base_url=f"{server.http_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def grpc_client(server):
    with TriptychClient(server.grpc_target) as client:
        yield client


