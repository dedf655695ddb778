"""The HTTP edge without Serve: `deployments.http_edge` (API key, body size) and `deployments.http_errors`
(every error in OpenAI's shape) installed on a small FastAPI app, driven in-process by Starlette's client."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

import deployments.edge_policy as edge_policy_module
from deployments.edge_policy import install_edge_policy
from deployments.http_edge import install_http_edge
from triptych.auth import API_KEYS_ENV
from triptych.config import TriptychConfig

LIMIT = 1000


class Body(BaseModel):
    n: int
    names: list[str]


def make_app(read_bodies: list[int]) -> FastAPI:
    app = FastAPI()
    install_http_edge(app)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/")
    def page():
        return {"page": True}

    @app.get("/static/{name}")
    def static(name: str):
        return {"file": name}

    @app.post("/v1/raw")
    async def raw(request: Request):
        body = await request.body()
        read_bodies.append(len(body))
        return {"bytes": len(body)}

    @app.post("/v1/typed")
    def typed(body: Body):
        return {"n": body.n}

    return app


@pytest.fixture
def edge(monkeypatch, tmp_path):
    """(client, read_bodies) with keys env-key (environment) and file-key (auth.api_keys_file)."""
    monkeypatch.setattr(edge_policy_module, "_installed", None)
    read_bodies: list[int] = []
    client = TestClient(make_app(read_bodies))

    def install(keys: bool = True):
        monkeypatch.setenv(API_KEYS_ENV, "env-key" if keys else "")
        path = tmp_path / "keys"
        path.write_text("file-key\n")
        install_edge_policy(TriptychConfig(auth={"api_keys_file": path if keys else None},
                                           limits={"max_request_bytes": LIMIT}))
    return client, read_bodies, install


def assert_error_shape(response, status: int, code: str | None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    return error


def test_before_the_ingress_installs_its_policy_every_request_is_refused(edge):
    client, _, _ = edge
    assert_error_shape(client.get("/healthz"), 503, None)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "env-key"},
                                     {"Authorization": "Basic env-key"}])
def test_no_or_wrong_key_is_401_in_the_error_shape(edge, headers):
    client, read, install = edge
    install()
    response = client.post("/v1/raw", content=b"x" * 10, headers=headers)
    error = assert_error_shape(response, 401, "invalid_api_key")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in error["message"]
    assert "wrong" not in error["message"] and read == []  # the route never ran
    assert_error_shape(client.get("/v1/unknown", headers=headers), 401, "invalid_api_key")  # paths not revealed


@pytest.mark.parametrize("key", ["env-key", "file-key"])
def test_either_key_source_lets_a_request_in(edge, key):
    client, read, install = edge
    install()
    response = client.post("/v1/raw", content=b"abc", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json() == {"bytes": 3} and read == [3]


def test_health_and_the_browser_page_stay_open(edge):
    client, _, install = edge
    install()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/").json() == {"page": True}
    assert client.get("/static/app.js").json() == {"file": "app.js"}
    assert_error_shape(client.post("/"), 401, "invalid_api_key")  # only GET / HEAD are open
    assert_error_shape(client.get("/staticx"), 401, "invalid_api_key")


def test_without_keys_nothing_asks_for_one(edge):
    client, _, install = edge
    install(keys=False)
    assert client.post("/v1/raw", content=b"ab").json() == {"bytes": 2}
    assert client.post("/v1/raw", content=b"ab", headers={"Authorization": "Bearer any"}).status_code == 200


def test_content_length_over_the_limit_is_413_before_the_route_reads(edge):
    client, read, install = edge
    install(keys=False)
    error = assert_error_shape(client.post("/v1/raw", content=b"x" * (LIMIT + 1)), 413, "request_too_large")
    assert f"{LIMIT + 1} bytes; at most {LIMIT} bytes allowed" in error["message"]
    assert read == []
    assert client.post("/v1/raw", content=b"x" * LIMIT).json() == {"bytes": LIMIT}  # the limit itself is fine


def test_a_chunked_body_is_counted_while_it_is_read(edge):
    client, read, install = edge
    install(keys=False)

    def chunks(total: int):
        for _ in range(total // 100):
            yield b"x" * 100
        yield b"x" * (total % 100)

    over = client.post("/v1/raw", content=chunks(LIMIT + 1))
    assert "content-length" not in {k.lower() for k in over.request.headers}  # chunked: no length given
    error = assert_error_shape(over, 413, "request_too_large")
    assert f"larger than {LIMIT} bytes" in error["message"] and read == []
    assert client.post("/v1/raw", content=chunks(LIMIT)).json() == {"bytes": LIMIT}
    # FastAPI reading a typed body hits the same limit
    assert_error_shape(client.post("/v1/typed", content=chunks(LIMIT + 1)), 413, "request_too_large")


def test_unknown_path_and_wrong_method_are_in_the_error_shape(edge):
    client, _, install = edge
    install(keys=False)
    error = assert_error_shape(client.get("/v1/nothing-here"), 404, "unknown_url")
    assert error["message"] == "unknown URL: GET /v1/nothing-here"
    response = client.get("/v1/raw")
    error = assert_error_shape(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert error["message"] == "method GET is not allowed on /v1/raw; allowed: POST"


@pytest.mark.parametrize("content, param", [
    (b'{"n": "many", "names": []}', "n"),
    (b'{"n": 1, "names": ["a", 2]}', "names[1]"),
    (b'{"names": []}', "n"),
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
])
def test_request_validation_is_400_naming_the_field(edge, content, param):
    client, _, install = edge
    install(keys=False)
    response = client.post("/v1/typed", content=content, headers={"content-type": "application/json"})
    error = assert_error_shape(response, 400, None, param)
    assert error["message"].startswith(f"{param}: ")
