"""Sends an API key with every gRPC call: metadata `authorization: Bearer <key>`, added by a channel
interceptor, so no call of the client can forget it (the server: `deployments.grpc_edge`)."""

from __future__ import annotations

import os
from collections import namedtuple

import grpc

from triptych.auth import API_KEY_ENV


def api_key_from_env(api_key: str | None) -> str | None:
    """`api_key` if given, else `TRIPTYCH_API_KEY` from the environment (None when unset or empty)."""
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class BearerKeyInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, api_key: str):
        self._pair = ("authorization", f"Bearer {api_key}")

    def __repr__(self) -> str:  # never the key
        return "BearerKeyInterceptor(<key>)"

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_key(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_key(client_call_details), request)


def keyed_channel(channel: grpc.Channel, api_key: str | None) -> grpc.Channel:
    """`channel` sending `api_key` with every call (unchanged when there is no key)."""
    return grpc.intercept_channel(channel, BearerKeyInterceptor(api_key)) if api_key else channel
