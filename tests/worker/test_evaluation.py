"""An evaluation submitted over HTTP is run by a real worker: avg@k, pass@k and maj@k per
dataset, stored on the evaluation."""

from __future__ import annotations

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
