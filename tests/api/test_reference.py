"""The API reference pages over real HTTP: /docs and /redoc load their viewers from this
server only (no CDN), from a fixed table of the `fastapi-offline` package's bundles. That
they render, offline, with an Authorize button, is tested in Chromium
(tests/dashboard/test_reference_pages.py)."""

from __future__ import annotations

import re

import httpx

from api.reference import ASSET_PREFIX, MEDIA_TYPES, asset_dir


def _sources(html: str) -> list[str]:
    """Every URL a page loads: src= and href= attributes, and the viewers' JS options."""
    return re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)


def test_swagger_ui_loads_only_this_servers_assets(server: str) -> None:
    r = httpx.get(server + "/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    sources = _sources(r.text)
    assert f"{ASSET_PREFIX}/swagger-ui-bundle.js" in sources
    assert f"{ASSET_PREFIX}/swagger-ui.css" in sources
    assert all(s.startswith("/") for s in sources), sources
    assert "cdn" not in r.text.lower()
    # The key entered with Authorize survives a reload.
    assert '"persistAuthorization": true' in r.text


def test_redoc_loads_only_this_servers_assets(server: str) -> None:
    r = httpx.get(server + "/redoc")
    assert r.status_code == 200
    sources = _sources(r.text)
    assert f"{ASSET_PREFIX}/redoc.standalone.js" in sources
    assert all(s.startswith("/") for s in sources), sources
    assert "fonts.googleapis" not in r.text and "cdn" not in r.text.lower()


def test_every_bundle_is_served_whole_with_its_type(server: str) -> None:
    for name, media_type in MEDIA_TYPES.items():
        r = httpx.get(f"{server}{ASSET_PREFIX}/{name}")
        assert r.status_code == 200, name
        assert r.content == (asset_dir() / name).read_bytes()
        assert r.headers["content-type"] == media_type
        assert r.headers["x-content-type-options"] == "nosniff"


def test_a_file_outside_the_table_is_a_404_in_the_envelope(server: str) -> None:
    for name in ("core.py", "missing.js", "__init__.py"):
        r = httpx.get(f"{server}{ASSET_PREFIX}/{name}")
        assert r.status_code == 404, name
        assert r.json()["error"]["param"] == "name"
    # A path with a slash, encoded or not, never reaches the table: no route matches it.
    for name in ("../core.py", "..%2Fcore.py"):
        r = httpx.get(f"{server}{ASSET_PREFIX}/{name}")
        assert r.status_code == 404 and "error" in r.json(), name


def test_the_schema_offers_the_bearer_key_the_authorize_button_asks_for(server: str) -> None:
    schema = httpx.get(server + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/files"]["get"]["security"] == [{"apiKey": []}]
    assert "/docs" not in schema["paths"] and "/redoc" not in schema["paths"]
