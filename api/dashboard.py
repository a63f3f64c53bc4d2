"""The web dashboard: static pages served by the API itself under /ui/ (no separate server,
no CDN: every asset ships in `api/static/dashboard`).

    GET /            -> 307 to /ui/
    GET /ui/         the single page (index.html); its scripts route by the URL's #fragment
    GET /ui/<asset>  a file of api/static/dashboard (the set is fixed when the app starts)

The pages hold no data and need no key: the browser signs in with an API key kept in its
session storage and calls the existing /v1 and /api routes with it as a Bearer header, so a
tenant sees exactly what its key sees over HTTP, and the key never appears in a URL or in the
access log. Every page response carries a Content-Security-Policy that allows only this
origin's scripts, styles and connections (no inline script, no framing).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from store.errors import NotFoundError

ASSETS = Path(__file__).resolve().parent / "static" / "dashboard"
"""Where the dashboard's files live."""
PREFIX = "/ui"

MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
               ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
"""The kinds of file the dashboard ships, by suffix; no other file is served."""

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "font-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the server: the browser revalidates (ETag) on each load.
    "Cache-Control": "no-cache",
}
"""Headers of every dashboard response."""


def asset_table(root: Path = ASSETS) -> dict[str, Path]:
    """Relative URL path -> file, for every servable file under `root`."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in MEDIA_TYPES}


def router(root: Path = ASSETS) -> APIRouter:
    """The dashboard's routes (left out of the OpenAPI schema: they are pages, not API)."""
    files = asset_table(root)
    r = APIRouter(include_in_schema=False)

    @r.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @r.get(PREFIX)
    def bare() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @r.get(PREFIX + "/{path:path}", response_model=None)
    def asset(path: str) -> FileResponse:
        # A fixed table, not a path join: nothing outside it can be named.
        found = files.get(path or "index.html")
        if found is None:
            raise NotFoundError(f"no dashboard file {path!r}", param="path")
        return FileResponse(found, media_type=MEDIA_TYPES[found.suffix], headers=HEADERS)

    return r


def install(app: FastAPI) -> None:
    """Mount the dashboard on `app`."""
    app.include_router(router())
