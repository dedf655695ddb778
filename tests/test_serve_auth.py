"""API keys and request-size limits through Serve, on both APIs: a Triptych started with two keys in
`TRIPTYCH_API_KEYS` and one in `auth.api_keys_file`, and a small `limits.max_request_bytes` (1 MiB) so
the size tests stay cheap. Health stays open; a missing or wrong key is 401 / UNAUTHENTICATED; a body or
message past the limit is 413 / RESOURCE_EXHAUSTED before it is parsed; no key appears in any log.

One Serve start-up for the module (tiny profile, fractional CPUs). It starts its own Ray (marked
``own_ray``: conftest runs it before the session ``server``): the environment variable must be in this
process before Ray starts, which is how the ingress replica gets it.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import openai
import pytest
import ray
from ray.serve.generated import serve_pb2, serve_pb2_grpc

from deployments.server import serving
from launcher.client import TriptychClient
from tests import raw_http
from tests.serving import image_bytes, require_own_ray, user_message
from triptych.auth import API_KEYS_ENV
from triptych.config import DeploymentOptions, TriptychConfig
from triptych.ports import free_port
from triptych.v1 import triptych_pb2 as pb

pytestmark = pytest.mark.own_ray

ENV_KEYS = ("env-key-4f1c9a", "env-key-b27d3e")
FILE_KEY = "file-key-9c58d0"
WRONG_KEY = "wrong-key-77aa01"
LIMIT = 2**20  # limits.max_request_bytes of this module's server


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    require_own_ray("test_serve_auth")
    keys_file = tmp_path_factory.mktemp("auth") / "api_keys"
    keys_file.write_text(f"# the operators' key\n{FILE_KEY}\n")
    config = TriptychConfig(
        profile="tiny", model_dir=tmp_path_factory.mktemp("models"), http_port=free_port(), grpc_port=free_port(),
        auth={"api_keys_file": keys_file}, limits={"max_request_bytes": LIMIT},
        ingress=DeploymentOptions(num_cpus=0.1), vision_encoder=DeploymentOptions(num_cpus=0.1),
        llm_decoder=DeploymentOptions(num_cpus=0.2), text_encoder=DeploymentOptions(num_cpus=0.1),
        denoiser=DeploymentOptions(num_cpus=0.2),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEYS_ENV, ",".join(ENV_KEYS))
        with serving(config, quiet=True) as running:
            yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "invalid_api_key")
    assert WRONG_KEY not in error["message"]


def test_health_and_the_browser_page_need_no_key(keyed_server):
    assert httpx.get(f"{keyed_server.http_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{keyed_server.http_url}/").status_code == 200
    with TriptychClient(keyed_server.grpc_target, api_key="") as client:
        assert client.health() == "SERVING"
    with grpc.insecure_channel(keyed_server.grpc_target) as channel:
        stub = serve_pb2_grpc.RayServeAPIServiceStub(channel)
        assert stub.Healthz(serve_pb2.HealthzRequest(), timeout=30).message == "success"


@pytest.mark.parametrize("headers", [{}, bearer(WRONG_KEY), {"Authorization": ENV_KEYS[0]}],
                         ids=["no key", "wrong key", "no Bearer scheme"])
@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                          ("POST", "/v1/images/generations"), ("GET", "/v1/nowhere")])
def test_http_without_a_valid_key_is_401(keyed_server, headers, method, path):
    assert_401(httpx.request(method, f"{keyed_server.http_url}{path}", headers=headers, json={}, timeout=30))


@pytest.mark.parametrize("key", [*ENV_KEYS, FILE_KEY], ids=["env key 1", "env key 2", "file key"])
def test_every_key_from_both_sources_is_let_in(keyed_server, key):
    response = httpx.get(f"{keyed_server.http_url}/v1/models", headers=bearer(key), timeout=30)
    assert response.status_code == 200 and len(response.json()["data"]) >= 2


def test_the_official_client_works_with_a_key_and_says_why_without_one(keyed_server):
    good = openai.OpenAI(base_url=f"{keyed_server.http_url}/v1", api_key=FILE_KEY, max_retries=0)
    reply = good.chat.completions.create(model="", messages=[user_message("hi", image_bytes((1, 99, 7)))],
                                         max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    image = good.images.generate(prompt="a dot", size="16x16", extra_body={"steps": 1})
    assert image.data[0].b64_json
    bad = openai.OpenAI(base_url=f"{keyed_server.http_url}/v1", api_key=WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.code == "invalid_api_key"


def chat_request() -> pb.ChatRequest:
    return pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="hi")])],
                          max_tokens=2)


@pytest.mark.parametrize("key", ["", WRONG_KEY], ids=["no key", "wrong key"])
def test_grpc_without_a_valid_key_is_unauthenticated(keyed_server, key):
    with TriptychClient(keyed_server.grpc_target, api_key=key) as client:
        for call in (lambda: list(client.chat_request(chat_request())),
                     lambda: list(client.generate_image(pb.GenerateImageRequest(prompt="x", steps=1)))):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer <key>" in info.value.details()
            assert WRONG_KEY not in info.value.details()


@pytest.mark.parametrize("key", [ENV_KEYS[1], FILE_KEY], ids=["env key", "file key"])
def test_grpc_with_a_key_from_either_source_is_served(keyed_server, key):
    with TriptychClient(keyed_server.grpc_target, api_key=key) as client:
        assert list(client.chat_request(chat_request()))[-1].finish_reason in ("stop", "length")
        events = list(client.generate_image(pb.GenerateImageRequest(prompt="x", steps=1, width=16, height=16)))
        assert events[-1].HasField("result")


def test_a_body_over_the_limit_is_413_before_it_is_sent(keyed_server):
    """Content-Length says max + 1: the answer comes after 1 KiB of the body, which never finishes."""
    port = int(keyed_server.http_url.rsplit(":", 1)[1])
    headers = {**bearer(FILE_KEY), "Content-Type": "application/json", "Content-Length": str(LIMIT + 1)}
    response = raw_http.post(port, "/v1/chat/completions", headers, [b"{" + b" " * 1023])
    assert response.status == 413
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("request_too_large", None)
    assert error["message"] == f"request body is {LIMIT + 1} bytes; at most {LIMIT} bytes allowed " \
                               "(limits.max_request_bytes)"
    without_key = raw_http.post(port, "/v1/chat/completions", {"Content-Length": str(LIMIT + 1)}, [b"{"])
    assert without_key.status == 401  # the key is checked first


def test_a_chunked_body_is_cut_off_at_the_limit(keyed_server):
    """No length given: the edge counts while it reads and answers 413 at max + 1 bytes, although the body
    (never terminated) has not ended."""
    port = int(keyed_server.http_url.rsplit(":", 1)[1])
    headers = {**bearer(FILE_KEY), "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    response = raw_http.post(port, "/v1/images/generations", headers, raw_http.chunked(LIMIT + 1))
    assert response.status == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert f"larger than {LIMIT} bytes" in response.json()["error"]["message"]


def test_a_body_at_the_limit_is_read_and_parsed(keyed_server):
    response = httpx.post(f"{keyed_server.http_url}/v1/chat/completions", content=b" " * (LIMIT - 1) + b"x",
                          headers={**bearer(FILE_KEY), "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"


def test_a_grpc_message_over_the_limit_is_resource_exhausted(keyed_server):
    """Serve's gRPC proxy has the same limit: one byte over is refused by the proxy, one under reaches
    the ingress (whose image check then names the field)."""
    with TriptychClient(keyed_server.grpc_target, api_key=FILE_KEY) as client:
        def message(image_size: int) -> pb.ChatRequest:
            request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[
                pb.ContentPart(image=b"\0" * image_size), pb.ContentPart(text="q")])])
            overhead = request.ByteSize() - image_size
            return pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=[
                pb.ContentPart(image=b"\0" * (image_size - overhead)), pb.ContentPart(text="q")])])

        over, under = message(LIMIT + 1), message(LIMIT)
        assert (over.ByteSize(), under.ByteSize()) == (LIMIT + 1, LIMIT)
        with pytest.raises(grpc.RpcError) as info:
            list(client.chat_request(over))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            list(client.chat_request(under))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("messages[0].content[0]: ")


def test_no_key_appears_in_any_log(keyed_server):
    """After every test above (which sent each key, and a wrong one), no log file of this Ray session
    (driver, proxies, replicas, raylet, GCS) contains any of them."""
    httpx.get(f"{keyed_server.http_url}/v1/models", headers=bearer(WRONG_KEY), timeout=30)
    logs_dir = ray._private.worker._global_node.get_logs_dir_path()
    files = [p for p in Path(logs_dir).rglob("*") if p.is_file()]
    assert any("replica" in p.name for p in files) and any("proxy" in p.name for p in files)
    for path in files:
        data = path.read_bytes()
        for key in (*ENV_KEYS, FILE_KEY, WRONG_KEY):
            assert key.encode() not in data, f"{key} in {path}"
