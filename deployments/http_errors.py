"""Every HTTP error in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: FastAPI's own
request validation (400, the field named in `param`), an unknown path (404), a wrong method (405, with
`Allow`), a body over the limit (413) and any other `HTTPException` the routes raise.

`install_error_handlers(app)` must run before `@serve.ingress(app)`, which freezes a copy of the app.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from deployments.edge_policy import edge_policy
from deployments.openai_chat import error_body

CODES = {401: "invalid_api_key", 404: "unknown_url", 405: "method_not_allowed", 413: "request_too_large"}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


def field_path(error: dict) -> str:
    """A FastAPI error's location as a request field: ("body", "messages", 0, "content") -> messages[0].content;
    a body that is not JSON at all (location: its character offset) is `body`."""
    loc = list(error.get("loc") or ("body",))
    if error.get("type") == "json_invalid":
        return "body"
    parts = loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path", "header") else loc
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 (as every other bad request here, not FastAPI's 422), `param` = the first bad field."""
    errors = exc.errors() or [{"loc": ("body",), "msg": "invalid request"}]
    message = "; ".join(f"{field_path(e)}: {e['msg']}" for e in errors)
    return JSONResponse(error_body(message, field_path(errors[0])), status_code=400)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    status = exc.status_code
    default = exc.detail in (None, "", HTTPStatus(status).phrase)
    if status == 404 and default:
        message = f"unknown URL: {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        allowed = (exc.headers or {}).get("Allow")
        message += f"; allowed: {allowed}" if allowed else ""
    elif status == 413:
        policy = edge_policy()
        limit = f"{policy.max_request_bytes} bytes" if policy else "the limit"
        message = f"request body is larger than {limit} (limits.max_request_bytes)"
    else:
        message = str(exc.detail)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(error_body(message, None, kind, CODES.get(status)), status_code=status,
                        headers=exc.headers)
