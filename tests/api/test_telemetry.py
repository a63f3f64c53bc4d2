"""Prometheus metrics at `GET /metrics` over real HTTP: request counters and latencies
labelled by route template, and job gauges that match the database."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.models import Job
from store.settings import Settings
from store.states import JobStatus
from tests.service import make_job

Sessions = sessionmaker[Session]


def _scrape(server: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape, without an API key."""
    r = httpx.get(server + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_and_timed_by_route_template(
        server: str, http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    route = "/api/jobs/{job_id}/metrics/names"
    labels = {"method": "GET", "route": route, "status": "200"}
    before = _scrape(server)
    for _ in range(3):
        assert http.get(f"/api/jobs/{job_id}/metrics/names").status_code == 200
    after = _scrape(server)
    for name in ("paec_http_requests_total", "paec_http_request_duration_seconds_count"):
        assert _value(after, name, **labels) - _value(before, name, **labels) == 3
    assert not any(job_id in value for _, sample_labels in after for _, value in sample_labels)


def test_errors_are_counted_under_their_status(server: str, http: httpx.Client) -> None:
    labels = {"method": "GET", "route": "/api/jobs/{job_id}/metrics", "status": "404"}
    before = _value(_scrape(server), "paec_http_requests_total", **labels)
    assert http.get("/api/jobs/ftjob-nope/metrics").status_code == 404
    assert _value(_scrape(server), "paec_http_requests_total", **labels) == before + 1


def test_a_path_that_matches_no_route_is_counted_as_unmatched(server: str) -> None:
    labels = {"method": "GET", "route": "<unmatched>", "status": "404"}
    before = _value(_scrape(server), "paec_http_requests_total", **labels)
    assert httpx.get(server + "/no/such/ftjob-123").status_code == 404
    after = _scrape(server)
    assert _value(after, "paec_http_requests_total", **labels) == before + 1
    assert not any("ftjob-123" in value for _, sample_labels in after
                   for _, value in sample_labels)


def test_job_gauges_count_the_rows_per_status(
        server: str, sessions: Sessions, tenant: tuple[str, str]) -> None:
    for status in ("paused", "paused", "failed"):
        make_job(sessions, tenant[0], status=status)
    samples = _scrape(server)
    with sessions() as session:
        counts = {status: count for status, count in session.execute(
            select(Job.status, func.count()).group_by(Job.status))}
    assert counts["paused"] >= 2
    for status in JobStatus:
        assert _value(samples, "paec_jobs", status=status.value) == counts.get(status.value, 0)
    assert _value(samples, "paec_database_up") == 1


def test_each_app_has_a_registry_of_its_own(service_settings: Settings) -> None:
    # Two apps in one process would raise "Duplicated timeseries" on a shared registry.
    first, second = create_app(service_settings), create_app(service_settings)
    assert first.state.metrics_registry is not second.state.metrics_registry
    first.state.services.engine.dispose()
    second.state.services.engine.dispose()
