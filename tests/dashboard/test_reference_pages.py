"""The API reference pages in Chromium with every request off this server refused: /docs
(Swagger UI) lists the operations and its Authorize button takes a key that then works for
"Try it out"; /redoc renders the same document. FastAPI's own pages load their viewers from a
CDN and are blank on a machine without internet (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, Route

from tests.dashboard.conftest import ARTIFACTS, VIEWPORT

DECORATION = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""The one request the pages make elsewhere: the image of ReDoc's "API docs by Redocly"
footer link, hard-coded in its bundle. Refused here, the page loses that logo only."""


@pytest.fixture
def offline(browser: Browser, api_url: str) -> Iterator[tuple[Page, list[str]]]:
    """A tab that may reach only the service; the URLs it tried elsewhere are listed (the
    ReDoc footer's logo, DECORATION, aside)."""
    context = browser.new_context(viewport=VIEWPORT)
    here = urlparse(api_url).netloc
    elsewhere: list[str] = []

    def gate(route: Route) -> None:
        if urlparse(route.request.url).netloc == here:
            route.continue_()
        else:
            if route.request.url != DECORATION:
                elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    try:
        yield page, elsewhere
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "reference-last.png"))
        context.close()


def test_swagger_ui_works_offline_and_authorize_takes_a_key(
        offline: tuple[Page, list[str]], api_url: str, key: str) -> None:
    page, elsewhere = offline
    page.goto(f"{api_url}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.locator("input").first.fill(key)
    dialog.get_by_role("button", name="Apply credentials").click()  # the dialog's Authorize
    assert dialog.get_by_role("button", name="Remove authorization").count() == 1
    dialog.get_by_role("button", name="Close").click()
    # GET /v1/files with the key: "Try it out", "Execute", a 200 with the list object.
    files = page.locator("#operations-files-list_files_v1_files_get")
    files.locator(".opblock-summary").click()
    files.get_by_role("button", name="Try it out").click()
    files.get_by_role("button", name="Execute").click()
    status = files.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=30_000)
    assert status.inner_text().strip() == "200"
    assert '"object": "list"' in files.locator(".live-responses-table").inner_text()
    page.screenshot(path=str(ARTIFACTS / "reference-swagger.png"))
    assert elsewhere == []


def test_redoc_works_offline(offline: tuple[Page, list[str]], api_url: str) -> None:
    page, elsewhere = offline
    page.goto(f"{api_url}/redoc")
    page.get_by_role("heading", name="paec").first.wait_for(timeout=30_000)
    page.get_by_text("/v1/fine_tuning/jobs").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "reference-redoc.png"))
    assert elsewhere == []
