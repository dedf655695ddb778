"""The browser page: `GET /` and its static files under `/static/`, shipped in `deployments/web/`.

Plain HTML, CSS and JavaScript (no build step, no CDN); the page talks to the same server's public
HTTP API (`/v1/chat/completions`, `/v1/images/generations` with `"stream": true`, `/v1/workflows`).
Files are looked up in this package's `web/` folder on the replica at request time, by exact name,
so nothing outside it can be served (no paths, no `..`).
"""

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).parent / "web"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def add_web_page(app: FastAPI) -> None:
    """Register `GET /` (the page) and `GET /static/{name}` (its files) on the ingress's FastAPI app."""
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/{name}", static_file, methods=["GET"], include_in_schema=False)


def page() -> FileResponse:
    return _file("index.html")


def static_file(name: str) -> FileResponse:
    return _file(name)


def _file(name: str) -> FileResponse:
    path = WEB_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or "\\" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no page file {name!r}")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
