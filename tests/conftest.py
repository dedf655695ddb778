"""Test-wide settings (never touch a model hub; Ray local) and the one running Triptych the Serve
tests share: Ray + Serve + an embedded Redis start once per session, on free ports, and stop at the end.

The suite runs on its own Ray and its own Redis whatever the shell says: REDIS_URL and RAY_ADDRESS are
removed from the environment for the session (tests/test_isolation.py proves it in a subprocess)."""

import os
from pathlib import Path

import pytest
from openai import OpenAI

from launcher.client import TriptychClient
from launcher.retry import NO_RETRIES
from tests.serving import serving_on_free_ports
from triptych.config import CacheOptions, DecoderBatching, DeploymentOptions, TriptychConfig

USER_WORKFLOWS = Path(__file__).parent / "workflows"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
OUTSIDE_ENV = ("REDIS_URL", "RAY_ADDRESS", "TRIPTYCH_API_KEYS")  # an operator's cluster, cache, keys: never the suite's
CLEARED_ENV = {name: os.environ.pop(name) for name in OUTSIDE_ENV if name in os.environ}


@pytest.fixture(scope="session")
def cleared_env() -> dict[str, str]:
    """What conftest took out of the environment at the start of the session."""
    return dict(CLEARED_ENV)


def pytest_collection_modifyitems(items):
    """Modules marked `own_ray` start a Ray of their own: they run first (in file order), before any
    test starts the shared `server` below."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is None)  # stable: order kept otherwise


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    config = TriptychConfig(
        profile="tiny",
        model_dir=tmp_path_factory.mktemp("models"),
        cache=CacheOptions(redis_url=None),  # the application's own embedded Redis
        workflows_dir=USER_WORKFLOWS,  # a user workflow beside the built-ins (test_serve_workflows)
        # Small limits so the overload test can fill them; every other test stays below.
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=4, max_queued_requests=4),
        vision_encoder=DeploymentOptions(num_cpus=0.2),
        llm_decoder=DeploymentOptions(num_cpus=0.2, max_ongoing_requests=8),
        # A decoder engine that holds 3 requests (3 batched, none waiting), so 4 concurrent chats overfill it.
        decoder_batching=DecoderBatching(max_batch_size=3, max_tokens_per_step=64, max_waiting=0),
    )
    ports = lambda http, grpc: config.model_copy(update={"http_port": http, "grpc_port": grpc})
    with serving_on_free_ports(ports, quiet=True) as running:  # RAY_ADDRESS is cleared above: a private Ray
        yield running


@pytest.fixture(scope="session")
def openai_client(server):
    return OpenAI(base_url=f"{server.http_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def grpc_client(server):
    with TriptychClient(server.grpc_target, retry=NO_RETRIES) as client:  # tests see every refusal
        yield client




@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are all per-op overhead: a second thread only spins on a shared 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    from models.tiny_diffusion import ensure_tiny_diffusion

    return ensure_tiny_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def engine(tiny_sd_dir):
    """A fresh DenoiserEngine on the tiny SD checkpoint, per test module."""
    from denoisers import DenoiserEngine

    return DenoiserEngine.from_pretrained(tiny_sd_dir)


@pytest.fixture(scope="module")
def text_engine(tiny_sd_dir):
    """A fresh TextEncoderEngine on the tiny SD checkpoint, per test module."""
    from denoisers import TextEncoderEngine

    return TextEncoderEngine.from_pretrained(tiny_sd_dir)


@pytest.fixture(scope="module")
def prompts(text_engine):
    """(cond, uncond) embeddings (T, D) of "a red circle" and the empty prompt."""
    return text_engine.encode_prompt("a red circle"), text_engine.encode_prompt("", allow_empty=True)
