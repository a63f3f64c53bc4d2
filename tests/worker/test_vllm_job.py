"""A job with `"rollout_engine": "vllm"` submitted over HTTP is trained by a real Celery worker
whose rollouts vLLM samples (issue 20); the engine's process ends with the job.

The job needs the vLLM virtualenv (`make vllm-venv`, or PAEC_VLLM_PYTHON): marked `vllm`, run
with PAEC_VLLM=1. Refusing an unknown engine needs nothing of vLLM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from transformers import PreTrainedTokenizerBase

from paec.modeling.loader import tiny_model
from tests.worker.conftest import TINY_HYPERPARAMETERS, Workers, wait_for
from tests.worker.test_worker import GRADER, metric_steps, status, upload


def engine_processes() -> list[str]:
    done = subprocess.run(["pgrep", "-af", "vllm_server.py"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


@pytest.mark.vllm
@pytest.mark.slow
def test_a_vllm_job_trains_over_http_and_leaves_no_engine_behind(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session],
        worker_env: dict[str, str], smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    # vLLM's CPU attention refuses the suite's tiny head_dim 16: a head_dim-32 model
    folder = Path(worker_env["PAEC_MODELS_DIR"]) / "tiny-vllm"
    tiny_model(smollm2_tokenizer, n_layer=1, n_embd=64, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    assert engine_processes() == []
    hyperparameters = {**TINY_HYPERPARAMETERS, "steps": 3, "rollout_engine": "vllm",
                       "vllm_max_model_len": 256, "vllm_kv_cache_gib": 0.25}
    r = user.post("/v1/fine_tuning/jobs", json={
        "model": "local:tiny-vllm", "training_file": upload(user), "seed": 3,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": hyperparameters}}})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["method"]["reinforcement"]["hyperparameters"]["rollout_engine"] == "vllm"
    workers.start()
    wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=600,
             what="the vLLM job to finish", log=workers.log)
    job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded", (job, workers.log())
    assert metric_steps(worker_sessions, job_id, "reward/mean") == [1, 2, 3]
    # every step that updated was importance-corrected against the engine's log-probs
    corrected = metric_steps(worker_sessions, job_id, "rollout/is_ratio_mean")
    skipped = metric_steps(worker_sessions, job_id, "train/skipped")
    assert sorted(corrected + skipped) == [1, 2, 3] and corrected
    wait_for(lambda: engine_processes() == [], timeout=30,
             what="the engine's process to end with the job", log=workers.log)


def test_an_unknown_engine_is_a_400_naming_the_field(user: httpx.Client) -> None:
    body = {"model": "local:tiny", "training_file": upload(user),
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": {"rollout_engine": "sglang"}}}}
    r = user.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == \
        "method.reinforcement.hyperparameters.rollout_engine", r.text
