"""A real browser on the real service: Debian's Chromium (`/usr/bin/chromium`, or
PAEC_CHROMIUM), driven by Playwright, against uvicorn and `celery worker` processes on
Postgres and Redis (the worker tests' fixtures). Each test's page fails the test on any
console error or uncaught exception it did not expect, and leaves a screenshot under
test-artifacts/dashboard (PAEC_TEST_ARTIFACTS overrides the folder)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from tests.service import ROOT, new_tenant_key
from tests.worker import conftest as worker_fixtures

# The worker tests' service, shared: Postgres, Redis, uvicorn, `celery worker` processes.
worker_env = worker_fixtures.worker_env
worker_sessions = worker_fixtures.worker_sessions
api_url = worker_fixtures.api_url
workers = worker_fixtures.workers

CHROMIUM = Path(os.environ.get("PAEC_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("PAEC_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does), "
                    "or point PAEC_CHROMIUM at one")
    with sync_playwright() as p:
        # --no-sandbox: the tests run as root in a container, where Chromium's sandbox
        # cannot start; the pages are this project's own.
        launched = p.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


class Tab:
    """One browser tab on the dashboard, with what its console said."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        self.allowed: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))

    def allow(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected (a 404 the test provokes)."""
        self.allowed.append(pattern)

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(re.search(a, p) for a in self.allowed)]

    def sign_in(self, key: str, fragment: str = "#/jobs") -> None:
        self.page.goto(f"{self.base}/ui/{fragment}")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#nav").wait_for(state="visible")

    def shot(self, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def tab(browser: Browser, api_url: str, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh browser context (its own session storage) on the service."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light",
                                  accept_downloads=True)
    opened = Tab(context.new_page(), api_url)
    try:
        yield opened
        assert not opened.unexpected(), opened.unexpected()
    finally:
        opened.shot(f"{request.node.name}-last")
        context.close()


@pytest.fixture
def key(worker_sessions: sessionmaker[Session]) -> str:
    """A fresh tenant's API key."""
    return new_tenant_key(worker_sessions)[1]


@pytest.fixture
def user(api_url: str, key: str) -> Iterator[httpx.Client]:
    """The same tenant, over HTTP."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client
