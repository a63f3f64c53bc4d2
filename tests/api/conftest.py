"""Fixtures of the API tests beyond the shared ones (tests/conftest.py)."""

from __future__ import annotations

import pytest

from store.settings import Settings
from store.storage import LocalStorage


@pytest.fixture
def storage(service_settings: Settings) -> LocalStorage:
    """The artifact storage of the API under test."""
    return LocalStorage(service_settings.resolved_artifacts_dir)
