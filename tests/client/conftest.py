"""The `paec` CLI under test against the real service (the `server`, `sessions` and `tenant`
fixtures of tests/conftest.py; no worker runs). `paec(...)` runs the CLI in-process,
pointed at the server through PAEC_API_URL / PAEC_API_KEY, and returns its exit code and
what it printed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from client.cli import main
from store.settings import Settings
from store.storage import LocalStorage


@dataclass(frozen=True)
class Run:
    """What one CLI invocation did."""

    code: int
    out: str
    err: str


Paec = Callable[..., Run]


@pytest.fixture
def storage(service_settings: Settings) -> LocalStorage:
    """The API's artifact storage (for arranging checkpoints)."""
    return LocalStorage(service_settings.resolved_artifacts_dir)


@pytest.fixture
def paec(server: str, tenant: tuple[str, str], capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process as the fresh tenant."""
    monkeypatch.setenv("PAEC_API_URL", server)
    monkeypatch.setenv("PAEC_API_KEY", tenant[1])

    def run(*argv: str) -> Run:
        capsys.readouterr()  # drop what earlier steps printed
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
