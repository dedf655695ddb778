"""The gRPC edge: every triptych.v1 call carries metadata `authorization: Bearer <key>` when the server has
API keys, else it ends UNAUTHENTICATED. Health (`grpc.health.v1.Health/Check`, Serve's
`RayServeAPIService/Healthz`) never comes here and stays open.

The size of a gRPC message is bounded by Serve's gRPC proxy itself (RESOURCE_EXHAUSTED past it; its
limit is set from `limits.max_request_bytes` in `deployments.serve_config`).
"""

from __future__ import annotations

import grpc

from deployments.edge_policy import edge_policy
from triptych.auth import bearer_token


class Unauthenticated(PermissionError):
    """A gRPC call without a valid API key (the status code is set on the call's context)."""


def require_api_key(grpc_context) -> None:
    """Set UNAUTHENTICATED on `grpc_context` and raise, unless the call may pass."""
    policy = edge_policy()
    if policy is not None and not policy.keys.enabled:
        return
    metadata = dict(grpc_context.invocation_metadata())
    token = bearer_token(metadata.get("authorization"))
    if policy is not None and policy.keys.accepts(token):
        return
    what = "missing API key" if token is None else "invalid API key"
    grpc_context.set_code(grpc.StatusCode.UNAUTHENTICATED)
    grpc_context.set_details(f"{what}: send metadata 'authorization: Bearer <key>' with one of the server's keys")
    raise Unauthenticated(what)
