"""The migrations build exactly the models' schema, on Postgres and on the embedded SQLite,
and downgrade/upgrade round-trip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import store.models  # noqa: F401  # every table on Base.metadata
from store.db import Base
from tests.service import alembic_config, fresh_postgres


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'paec.db'}"
    else:
        with fresh_postgres("paec_mig") as pg:
            yield pg


def schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"render_as_batch": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_migrations_produce_exactly_the_models_schema(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
    assert tables(url) == set(Base.metadata.tables)
    assert schema_diff(url) == []


def test_downgrade_then_upgrade_round_trips(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert tables(url) == set()
    command.upgrade(config, "head")
    assert schema_diff(url) == []


def test_the_schema_check_sees_a_drift(url: str) -> None:
    # the comparison is not vacuous: a model column that no migration creates is reported
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE tenants ADD COLUMN extra INTEGER")
    engine.dispose()
    assert any("extra" in str(d) for d in schema_diff(url))
