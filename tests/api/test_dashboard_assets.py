"""The dashboard's files over real HTTP: the redirects, the fixed asset table (nothing outside
it can be named), the security headers, and the API's envelope for an unknown file. What the
pages do is tested in a real browser (tests/dashboard)."""

from __future__ import annotations

import re

import httpx
import pytest

from api.dashboard import ASSETS, asset_table


def test_the_root_and_bare_prefix_redirect_to_the_dashboard(server: str) -> None:
    for path in ("/", "/ui"):
        r = httpx.get(server + path)
        assert (r.status_code, r.headers["location"]) == (307, "/ui/")


def test_every_shipped_file_is_served_with_its_type_and_the_security_headers(
        server: str) -> None:
    table = asset_table()
    assert {"index.html", "style.css", "js/main.js", "js/chart.js"} <= set(table)
    for path, file in table.items():
        r = httpx.get(f"{server}/ui/{path}")
        assert r.status_code == 200, path
        assert r.content == file.read_bytes()
        assert r.headers["content-type"].split(";")[0] in {
            "text/html", "text/javascript", "text/css", "image/svg+xml"}
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    index = httpx.get(f"{server}/ui/")
    assert index.content == (ASSETS / "index.html").read_bytes()


def test_the_pages_hold_no_inline_script_and_load_nothing_from_elsewhere() -> None:
    for path, file in asset_table().items():
        text = file.read_text()
        # No CDN, no internet at run time (an XML namespace is a name, not a fetch).
        assert not re.search(r"https?://(?!www\.w3\.org/)", text), path
        if path.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert not re.search(r"<[^>]+\son[a-z]+=", text), path


@pytest.mark.parametrize("path", ["../api/app.py", "..%2f..%2fpyproject.toml", "nope.js",
                                  "js/../../dashboard.py", "js/main.js.map", "%2e%2e/app.py"])
def test_nothing_outside_the_table_is_served(server: str, path: str) -> None:
    r = httpx.get(f"{server}/ui/{path}")
    assert r.status_code in (400, 404), (path, r.status_code)
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_dashboard_needs_no_key_but_the_api_it_calls_does(server: str) -> None:
    assert httpx.get(f"{server}/ui/js/api.js").status_code == 200
    assert httpx.get(f"{server}/v1/fine_tuning/jobs").status_code == 401
