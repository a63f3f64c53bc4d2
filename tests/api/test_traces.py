"""Token traces over real HTTP: `GET /api/jobs/{id}/traces` and `/traces/steps`, arranged with
store.traces.record_traces on the test database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.traces import record_traces
from tests.service import make_job, new_tenant_key

Sessions = sessionmaker[Session]
FIELDS = ["index", "prompt", "advantage", "tokens", "entropy", "top_p_entropy", "mask",
          "nucleus_size", "top_two_gap"]


def _trace(step: int, n: int = 2) -> dict[str, Any]:
    return {"tokens": [f"s{step}t{i}" for i in range(n)], "entropy": [0.5 * step] * n,
            "top_p_entropy": [0.25] * n, "mask": [1.0] * (n - 1) + [None],
            "nucleus_size": [4] * n, "top_two_gap": [0.125] * n}


def _job_with_traces(sessions: Sessions, tenant_id: str, steps: tuple[int, ...] = (1, 2, 3),
                     samples: int = 2) -> str:
    job_id = make_job(sessions, tenant_id, status="running")
    with transaction(sessions) as session:
        for step in steps:
            record_traces(session, job_id, step, [_trace(step) for _ in range(samples)])
    return job_id


def test_a_step_s_samples_are_served_with_every_field(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_traces(sessions, tenant[0])
    r = http.get(f"/api/jobs/{job_id}/traces", params={"step": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["object"], body["job_id"], body["step"]) == ("traces", job_id, 2)
    assert [s["index"] for s in body["samples"]] == [0, 1]
    sample = body["samples"][0]
    assert list(sample) == FIELDS
    assert sample["tokens"] == ["s2t0", "s2t1"] and sample["entropy"] == [1.0, 1.0]
    assert sample["mask"] == [1.0, None] and sample["nucleus_size"] == [4, 4]
    assert (sample["prompt"], sample["advantage"]) == (None, None)  # the trace had neither


def test_without_a_step_the_newest_stored_step_is_served(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_traces(sessions, tenant[0])
    body = http.get(f"/api/jobs/{job_id}/traces").json()
    assert body["step"] == 3 and body["samples"][0]["tokens"][0] == "s3t0"


def test_the_steps_with_traces_are_listed_ascending(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_traces(sessions, tenant[0], steps=(1, 4, 2))
    r = http.get(f"/api/jobs/{job_id}/traces/steps")
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "list", "job_id": job_id, "data": [1, 2, 4]}


def test_a_job_without_traces_lists_no_steps_and_has_no_latest_step(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    assert http.get(f"/api/jobs/{job_id}/traces/steps").json()["data"] == []
    r = http.get(f"/api/jobs/{job_id}/traces")
    assert r.status_code == 404 and r.json()["error"]["param"] == "step"


def test_a_step_without_traces_is_404_naming_step(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = _job_with_traces(sessions, tenant[0])
    r = http.get(f"/api/jobs/{job_id}/traces", params={"step": 7})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "step"


@pytest.mark.parametrize("path", ["traces", "traces/steps"])
def test_another_tenant_s_job_is_404_naming_job_id(
        http: httpx.Client, sessions: Sessions, path: str) -> None:
    other = new_tenant_key(sessions)[0]
    job_id = _job_with_traces(sessions, other)
    for url in (f"/api/jobs/{job_id}/{path}", f"/api/jobs/ftjob-missing/{path}"):
        r = http.get(url)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["param"] == "job_id"


@pytest.mark.parametrize("step", ["-1", "abc", str(2**31), "1.5", "99999999999999999999999"])
def test_a_bad_step_is_400_naming_step(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str], step: str) -> None:
    job_id = _job_with_traces(sessions, tenant[0])
    r = http.get(f"/api/jobs/{job_id}/traces", params={"step": step})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "step"


def test_the_routes_need_a_key(server: str, sessions: Sessions,
                               tenant: tuple[str, str]) -> None:
    job_id = _job_with_traces(sessions, tenant[0])
    assert httpx.get(f"{server}/api/jobs/{job_id}/traces").status_code == 401


def test_the_openapi_schema_documents_both_responses(app: FastAPI) -> None:
    schema = app.openapi()
    ok = {path: schema["paths"][path]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
          for path in ("/api/jobs/{job_id}/traces", "/api/jobs/{job_id}/traces/steps")}
    assert ok == {"/api/jobs/{job_id}/traces": "StepTraces",
                  "/api/jobs/{job_id}/traces/steps": "TraceSteps"}
    sample = schema["components"]["schemas"]["TraceSample"]
    assert sorted(sample["properties"]) == sorted(FIELDS)
