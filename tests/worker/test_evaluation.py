"""An evaluation submitted over HTTP is run by a real worker: avg@k, pass@k and maj@k per
dataset, stored on the evaluation."""

from __future__ import annotations

import time

import httpx

from tests.worker.conftest import Workers, wait_for


def test_an_evaluation_runs_on_a_worker_and_stores_its_results(
        user: httpx.Client, workers: Workers) -> None:
    created = user.post("/api/evaluations", json={
        "model": "local:tiny", "datasets": ["builtin:add"], "k": 2, "size": 4,
        "max_new_tokens": 6})
    assert created.status_code == 200, created.text
    eval_id = created.json()["id"]
    workers.start()

    def done() -> dict[str, object] | None:
        body: dict[str, object] = user.get(f"/api/evaluations/{eval_id}").json()
        return body if body["status"] in ("succeeded", "failed") else None

    result = wait_for(done, timeout=120, what="the evaluation", log=workers.log)
    assert result["status"] == "succeeded", (result, workers.log())
    scores = result["results"]["builtin:add"]
    assert set(scores) == {"avg@2", "pass@2", "maj@2", "n"}
    assert scores["n"] == 4
    assert all(0.0 <= scores[k] <= 1.0 for k in ("avg@2", "pass@2", "maj@2"))


def test_a_cancelled_running_evaluation_stops_and_frees_the_worker(
        user: httpx.Client, workers: Workers) -> None:
    """A cancel of a running evaluation stops its worker within a batch of
    problems; the evaluation queued behind it runs next, and the cancel stands."""
    long = user.post("/api/evaluations", json={
        "model": "local:tiny", "datasets": ["builtin:add"], "k": 4, "size": 4096,
        "max_new_tokens": 32}).json()["id"]
    short = user.post("/api/evaluations", json={
        "model": "local:tiny", "datasets": ["builtin:add"], "k": 2, "size": 4,
        "max_new_tokens": 6}).json()["id"]
    workers.start()

    def status(eval_id: str) -> str:
        return str(user.get(f"/api/evaluations/{eval_id}").json()["status"])

    wait_for(lambda: status(long) == "running", timeout=60, what="the long evaluation to run",
             log=workers.log)
    time.sleep(2)  # past the model load, into the batches
    assert user.post(f"/api/evaluations/{long}/cancel").json()["status"] == "cancelled"
    # Computed to the end, the long one would hold the worker for minutes.
    wait_for(lambda: status(short) in ("succeeded", "failed"), timeout=60,
             what="the evaluation queued behind the cancelled one", log=workers.log)
    assert status(short) == "succeeded", workers.log()
    body = user.get(f"/api/evaluations/{long}").json()
    assert (body["status"], body["results"], body["error"]) == ("cancelled", None, None)
