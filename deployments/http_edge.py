"""The HTTP edge in front of every route: the API key, then the body size, before any route runs.

`EdgeMiddleware` (plain ASGI) answers in OpenAI's error shape:
- 401 `invalid_api_key` with `WWW-Authenticate: Bearer` when keys are configured and the request has no
  `Authorization: Bearer <key>` or a wrong one; `/healthz`, the browser page `GET /` and `GET /static/*`
  stay open (the page asks for a key and sends it with its API calls);
- 413 `request_too_large` when `Content-Length` is over `limits.max_request_bytes`, before any byte of the
  body is read; a body without a length (chunked) is counted while the route reads it, by Starlette's
  `RequestBodyLimitMiddleware`, and the route's read fails with 413 at the first byte past the limit.

`install_http_edge(app)` must run before `@serve.ingress(app)` (which freezes a copy of the app).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.edge_policy import edge_policy
from deployments.http_errors import install_error_handlers
from deployments.openai_chat import error_body
from triptych.auth import bearer_token

OPEN_PATHS = ("/healthz", "/")  # exact paths, GET / HEAD only
OPEN_PREFIXES = ("/static/",)  # the browser page's files
KEY_HINT = "send the header 'Authorization: Bearer <key>' with one of the server's API keys"


def install_http_edge(app: FastAPI) -> None:
    app.add_middleware(EdgeMiddleware)
    install_error_handlers(app)


def is_open(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


class EdgeMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = edge_policy()
        if policy is None:  # the ingress constructor has not run in this process
            response = JSONResponse(error_body("the server is starting; retry", None, "server_error"), 503)
            await response(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if policy.keys.enabled and not is_open(scope["method"], scope["path"]):
            token = bearer_token(headers.get("authorization"))
            if not policy.keys.accepts(token):
                what = "missing API key" if token is None else "invalid API key"
                body = error_body(f"{what}: {KEY_HINT}", None, code="invalid_api_key")
                await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > policy.max_request_bytes:
            message = (f"request body is {int(length)} bytes; at most {policy.max_request_bytes} bytes allowed "
                       "(limits.max_request_bytes)")
            await JSONResponse(error_body(message, None, code="request_too_large"), 413)(scope, receive, send)
            return
        await RequestBodyLimitMiddleware(self.app, policy.max_request_bytes)(scope, receive, send)
