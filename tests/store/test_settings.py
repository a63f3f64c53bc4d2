"""store.settings: embedded defaults and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from store.settings import Settings


def test_embedded_default_needs_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings(data_dir=tmp_path / "d")
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'd' / 'paec.db'}"
    assert s.resolved_artifacts_dir == tmp_path / "d" / "artifacts"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAEC_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/test")
    monkeypatch.setenv("PAEC_MAX_UPLOAD_BYTES", "1024")
    s = Settings()
    assert s.resolved_database_url == "postgresql+psycopg://u@127.0.0.1/test"
    assert s.max_upload_bytes == 1024


def test_blank_url_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAEC_BROKER_URL", " ")
    with pytest.raises(ValidationError, match="must not be blank"):
        Settings()
