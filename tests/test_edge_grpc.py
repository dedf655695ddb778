"""The gRPC edge without Serve: the API-key check every triptych.v1 method runs first
(`deployments.grpc_edge`), and the gRPC proxy's message limit that `serving()` gives Serve's controller."""

from __future__ import annotations

import grpc
import pytest
from ray.serve.config import ControllerOptions

import deployments.edge_policy as edge_policy_module
from deployments.edge_policy import install_edge_policy
from deployments.grpc_edge import Unauthenticated, require_api_key
from deployments.serve_config import GRPC_MESSAGE_LIMIT_ENV, controller_options_for, serve_config_for
from triptych.auth import API_KEYS_ENV
from triptych.config import TriptychConfig


class FakeContext:
    def __init__(self, metadata):
        self._metadata, self.code, self.details = metadata, None, None

    def invocation_metadata(self):
        return self._metadata

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setattr(edge_policy_module, "_installed", None)
    monkeypatch.setenv(API_KEYS_ENV, "k-one,k-two")
    install_edge_policy(TriptychConfig())


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer nope")], [("authorization", "k-one")],
                                      [("application", "triptych")]])
def test_no_or_wrong_key_is_unauthenticated(keyed, metadata):
    context = FakeContext(metadata)
    with pytest.raises(Unauthenticated):
        require_api_key(context)
    assert context.code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <key>" in context.details and "nope" not in context.details


@pytest.mark.parametrize("key", ["k-one", "k-two"])
def test_a_good_key_passes(keyed, key):
    context = FakeContext([("application", "triptych"), ("authorization", f"Bearer {key}")])
    require_api_key(context)
    assert context.code is None


def test_without_keys_every_call_passes(monkeypatch):
    monkeypatch.setattr(edge_policy_module, "_installed", None)
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    install_edge_policy(TriptychConfig())
    require_api_key(FakeContext([]))


def test_before_the_policy_is_installed_calls_are_refused(monkeypatch):
    monkeypatch.setattr(edge_policy_module, "_installed", None)
    context = FakeContext([("authorization", "Bearer anything")])
    with pytest.raises(Unauthenticated):
        require_api_key(context)


def test_the_grpc_proxy_gets_the_request_limit_unless_the_file_sets_it():
    config = TriptychConfig(limits={"max_request_bytes": 12345})
    options = controller_options_for(serve_config_for(config), {"triptych": config})
    assert options["runtime_env"]["env_vars"] == {GRPC_MESSAGE_LIMIT_ENV: "12345"}
    own = ControllerOptions(runtime_env={"env_vars": {GRPC_MESSAGE_LIMIT_ENV: "999", "OTHER": "x"}})
    schema = serve_config_for(config).model_copy(update={"controller_options": own})
    assert controller_options_for(schema, {"triptych": config})["runtime_env"]["env_vars"] == {
        GRPC_MESSAGE_LIMIT_ENV: "999", "OTHER": "x"}
