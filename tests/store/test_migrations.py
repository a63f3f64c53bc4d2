"""The migrations build exactly the models' schema, on Postgres and on the embedded SQLite,
and downgrade/upgrade round-trip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

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


def test_0004_keeps_older_checkpoints_with_no_model_archive_and_its_downgrade_drops_it(
        url: str) -> None:
    # A checkpoint registered before model-only archives (issue 19) keeps its row and its
    # full-state archive; the model archive's columns are null (the API answers a model
    # download of it with a 404 naming `contents`: tests/store/test_checkpoints.py).
    config = alembic_config(url)
    command.upgrade(config, "0003")
    engine = create_engine(url)
    now = "2026-12-01 00:00:00"
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tenants (id, name, created_at) "
                                "VALUES ('t1', 't1', :t)"), {"t": now})
        connection.execute(text(
            "INSERT INTO jobs (id, tenant_id, model, training_file, status, method, config, "
            "seed, result_files, total_steps, step, attempt, created_at, updated_at) VALUES "
            "('j1', 't1', 'm', 'f', 'succeeded', '{}', '{}', 0, '[]', 1, 1, 1, :t, :t)"),
            {"t": now})
        connection.execute(text(
            "INSERT INTO checkpoints (id, job_id, step, model_name, storage_key, size, sha256, "
            "full_state, metrics, created_at) VALUES ('c1', 'j1', 1, 'ft:m', 'k.tar', 10, "
            "'ab', :yes, '{}', :t)"), {"t": now, "yes": True})
    command.upgrade(config, "0004")
    select_old = text("SELECT storage_key, size, model_storage_key, model_size, model_sha256 "
                      "FROM checkpoints WHERE id = 'c1'")
    with engine.connect() as connection:
        assert tuple(connection.execute(select_old).one()) == ("k.tar", 10, None, None, None)
    command.downgrade(config, "0003")
    columns = {c["name"] for c in inspect(engine).get_columns("checkpoints")}
    assert not {"model_storage_key", "model_size", "model_sha256"} & columns
    with engine.connect() as connection:
        assert connection.execute(text("SELECT storage_key FROM checkpoints")).scalar() == "k.tar"
    engine.dispose()
