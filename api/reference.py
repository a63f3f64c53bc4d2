"""The API reference pages, Swagger UI at /docs and ReDoc at /redoc, served with no CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet
/docs is blank. Here their scripts and styles come from the `fastapi-offline` package (a
registry package that ships Swagger UI's and ReDoc's release bundles) and are served by the
API itself from a fixed table:

    GET /docs                 Swagger UI over /openapi.json, with an Authorize button (the
                              `apiKey` bearer scheme of api/openapi.py); the key entered there
                              is kept in the tab's storage across reloads
    GET /redoc                ReDoc over /openapi.json
    GET /docs/assets/<name>   swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js,
                              favicon.png

The pages are not part of the OpenAPI document. They set no Content-Security-Policy: both
page templates (FastAPI's) start their viewer with an inline script.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from store.errors import NotFoundError

ASSET_PREFIX = "/docs/assets"
MEDIA_TYPES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
               "swagger-ui.css": "text/css; charset=utf-8",
               "redoc.standalone.js": "text/javascript; charset=utf-8",
               "favicon.png": "image/png"}
"""The files served, by name; nothing else of the package can be named."""

SWAGGER_PARAMETERS = {"persistAuthorization": True, "displayRequestDuration": True,
                      "tryItOutEnabled": False, "defaultModelsExpandDepth": 0}
"""Swagger UI's options: keep the key entered with Authorize across reloads, show each
call's duration."""


def asset_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's bundles in the installed `fastapi-offline`."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the API reference needs the `fastapi-offline` package (the api "
                           "extra): pip install -e '.[api]'")
    return Path(spec.origin).parent / "static"


def router(title: str, openapi_url: str = "/openapi.json") -> APIRouter:
    """The reference pages and their assets, for an app called `title`."""
    root = asset_dir()
    files = {name: root / name for name in MEDIA_TYPES}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline lacks {missing} in {root}")
    r = APIRouter(include_in_schema=False)

    @r.get("/docs")
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} - API reference",
            swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{ASSET_PREFIX}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS)

    @r.get("/redoc")
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{title} - API reference",
            redoc_js_url=f"{ASSET_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSET_PREFIX}/favicon.png", with_google_fonts=False)

    @r.get(ASSET_PREFIX + "/{name}", response_model=None)
    def asset(name: str) -> FileResponse:
        found = files.get(name)
        if found is None:
            raise NotFoundError(f"no reference asset {name!r}", param="name")
        # The bundles change only with the package: cache them for a day.
        return FileResponse(found, media_type=MEDIA_TYPES[name],
                            headers={"Cache-Control": "public, max-age=86400",
                                     "X-Content-Type-Options": "nosniff"})

    return r


def install(app: FastAPI) -> None:
    """Serve the reference pages on `app` (created with docs_url=None, redoc_url=None)."""
    app.include_router(router(app.title, app.openapi_url or "/openapi.json"))
