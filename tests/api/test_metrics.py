"""Metric series over real HTTP: `GET /api/jobs/{id}/metrics` (JSON and CSV) and
`/metrics/names`, arranged with store.metrics.record_metrics on the test database."""

from __future__ import annotations

import csv
import io
import itertools

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.metrics import record_metrics
from store.models import Metric
from tests.service import make_job, new_tenant_key

Sessions = sessionmaker[Session]


def _job_with_metrics(sessions: Sessions, tenant_id: str, steps: int = 100) -> str:
    """A job logging `loss` = step and `reward` = -step at steps 1..steps, and `lr` at
    every tenth step only."""
    job_id = make_job(sessions, tenant_id, status="running", total_steps=steps)
    with transaction(sessions) as session:
        for step in range(1, steps + 1):
            values = {"loss": float(step), "reward": float(-step)}
            if step % 10 == 0:
                values["lr"] = step / 1e6
            record_metrics(session, job_id, step, values)
    return job_id


def test_series_reads_the_step_range_downsampled_with_first_and_last_kept(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0])
    r = http.get(f"/api/jobs/{job_id}/metrics",
                 params={"names": "loss,reward", "start": 11, "end": 51, "max_points": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["object"], body["job_id"], body["names"]) == ("metrics", job_id,
                                                              ["loss", "reward"])
    # 41 points, 5 kept evenly by rank: ranks 0, 10, 20, 30, 40.
    assert body["series"]["loss"] == {"steps": [11, 21, 31, 41, 51],
                                      "values": [11.0, 21.0, 31.0, 41.0, 51.0]}
    assert body["series"]["reward"]["values"] == [-11.0, -21.0, -31.0, -41.0, -51.0]


def test_downsampling_keeps_at_most_max_points_of_an_uneven_count(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0])
    steps = http.get(f"/api/jobs/{job_id}/metrics",
                     params={"names": "loss", "max_points": 7}).json()["series"]["loss"]["steps"]
    assert len(steps) == 7
    assert (steps[0], steps[-1]) == (1, 100)
    assert steps == sorted(set(steps))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) - min(gaps) <= 1


def test_without_names_every_name_comes_back_at_full_resolution_below_the_default(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0])
    body = http.get(f"/api/jobs/{job_id}/metrics").json()
    assert body["names"] == ["loss", "lr", "reward"]
    assert len(body["series"]["loss"]["steps"]) == 100
    assert body["series"]["lr"]["steps"] == list(range(10, 101, 10))


def test_csv_has_a_step_column_one_column_per_name_and_empty_cells_for_gaps(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0])
    r = http.get(f"/api/jobs/{job_id}/metrics",
                 params={"names": "reward,lr", "start": 9, "end": 12, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert f'filename="{job_id}-metrics.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [["step", "reward", "lr"], ["9", "-9.0", ""], ["10", "-10.0", "1e-05"],
                    ["11", "-11.0", ""], ["12", "-12.0", ""]]


def test_names_lists_the_jobs_metric_names_sorted(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0], steps=10)
    r = http.get(f"/api/jobs/{job_id}/metrics/names")
    assert r.json() == {"object": "list", "job_id": job_id, "data": ["loss", "lr", "reward"]}


def test_a_replayed_step_writes_nothing_twice_and_keeps_the_first_value(
        sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0], steps=5)
    count = select(func.count()).select_from(Metric).where(Metric.job_id == job_id)
    with sessions() as session:
        before = session.scalar(count)
    with transaction(sessions) as session:
        record_metrics(session, job_id, 3, {"loss": 99.0, "reward": 99.0})
    with sessions() as session:
        assert session.scalar(count) == before == 10
        assert session.get(Metric, (job_id, "loss", 3)).value == 3.0  # type: ignore[union-attr]


def test_non_finite_values_are_skipped(sessions: Sessions, tenant: tuple[str, str],
                                       http: httpx.Client) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    with transaction(sessions) as session:
        record_metrics(session, job_id, 1, {"loss": float("nan"), "kl": float("inf"),
                                            "reward": 0.5})
    assert http.get(f"/api/jobs/{job_id}/metrics/names").json()["data"] == ["reward"]


def test_unknown_names_are_400_listing_them(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0], steps=3)
    r = http.get(f"/api/jobs/{job_id}/metrics", params={"names": "loss,nope,zzz"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "names"
    assert "nope, zzz" in error["message"]


@pytest.mark.parametrize(("params", "param"), [
    ({"start": 10, "end": 5}, "start"),
    ({"max_points": 1}, "max_points"),
    ({"max_points": 10_001}, "max_points"),
    ({"format": "xml"}, "format"),
    ({"start": "x"}, "start"),
])
def test_bad_parameters_are_400_naming_the_parameter(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str],
        params: dict[str, object], param: str) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    r = http.get(f"/api/jobs/{job_id}/metrics", params=params)  # type: ignore[arg-type]
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("suffix", ["/metrics", "/metrics/names", "/stream"])
def test_another_tenants_job_is_404(http: httpx.Client, sessions: Sessions,
                                    suffix: str) -> None:
    other, _ = new_tenant_key(sessions)
    job_id = _job_with_metrics(sessions, other, steps=2)
    r = http.get(f"/api/jobs/{job_id}{suffix}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_metrics_need_an_api_key(server: str, sessions: Sessions,
                                 tenant: tuple[str, str]) -> None:
    job_id = _job_with_metrics(sessions, tenant[0], steps=2)
    r = httpx.get(f"{server}/api/jobs/{job_id}/metrics")
    assert r.status_code == 401
