"""Prometheus metrics of the API, served by `GET /metrics` (api/routes/health.py).

- `paec_http_requests_total{method, route, status}` and
  `paec_http_request_duration_seconds{method, route, status}` (a histogram), counted by an
  ASGI middleware. `route` is the matched route's template (`/v1/fine_tuning/jobs/{job_id}`),
  never the raw path, so ids do not multiply the series; a request that matches no route is
  `<unmatched>`. The duration runs until the response's headers leave, so a stream or a
  large download measures the server's work, not how long the client takes to read.
- `paec_jobs{status}` and `paec_evaluations{status}`: rows per status, two GROUP BY queries
  run when Prometheus scrapes; `paec_database_up` is 0 when they fail (the scrape still
  answers, with the HTTP series).

Each app has a registry of its own (not prometheus_client's global one), so that tests and
tools that build several apps in one process do not collide. With several uvicorn worker
processes, each keeps its own counters; Prometheus sums them when every process is scraped
(or run one process per port).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.metrics import evaluations_by_status, jobs_by_status

log = logging.getLogger("paec.api")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
"""Seconds; finer than prometheus_client's defaults below 5 ms, where polling requests fall."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


class RequestMetrics:
    """ASGI middleware counting requests and timing them by method, route and status."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees when the app fails before answering
        elapsed: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            # The router writes the matched route into the shared scope.
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            labels = (method, template, str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(
                elapsed if elapsed is not None else time.perf_counter() - start)


class StateCollector(Collector):
    """Jobs and evaluations per status, read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterator[Any]:
        # Describing without collecting keeps registration free of database queries.
        yield GaugeMetricFamily("paec_jobs", "Fine-tuning jobs per status.", labels=["status"])
        yield GaugeMetricFamily("paec_evaluations", "Evaluations per status.",
                                labels=["status"])
        yield GaugeMetricFamily("paec_database_up", "1 when the scrape's queries succeeded.")

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("paec_jobs", "Fine-tuning jobs per status.", labels=["status"])
        evaluations = GaugeMetricFamily("paec_evaluations", "Evaluations per status.",
                                        labels=["status"])
        try:
            with self.sessions() as session:
                job_counts = jobs_by_status(session)
                evaluation_counts = evaluations_by_status(session)
        except Exception:
            log.exception("metrics scrape: database query failed")
            yield GaugeMetricFamily("paec_database_up", "1 when the scrape's queries "
                                    "succeeded.", value=0)
            return
        for status, count in sorted(job_counts.items()):
            jobs.add_metric([status], count)
        for status, count in sorted(evaluation_counts.items()):
            evaluations.add_metric([status], count)
        yield jobs
        yield evaluations
        yield GaugeMetricFamily("paec_database_up", "1 when the scrape's queries succeeded.",
                                value=1)


def install(app: FastAPI) -> None:
    """Give `app` its registry (`app.state.metrics_registry`), the request middleware and the
    scrape-time gauges."""
    registry = CollectorRegistry()
    labels = ("method", "route", "status")
    requests = Counter("paec_http_requests", "HTTP requests answered.", labels,
                       registry=registry)
    latency = Histogram("paec_http_request_duration_seconds",
                        "Seconds from a request's arrival to its response's headers.", labels,
                        buckets=LATENCY_BUCKETS, registry=registry)
    registry.register(StateCollector(app.state.services.sessions))
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)


def render(app: FastAPI) -> tuple[bytes, str]:
    """The app's metrics in Prometheus' text format, and its content type."""
    registry: CollectorRegistry = app.state.metrics_registry
    return generate_latest(registry), CONTENT_TYPE_LATEST
