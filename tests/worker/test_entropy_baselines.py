"""The entropy baselines (CE-GPPO, ERC, EntroPIC, AEnt) as jobs: selected through
`method.reinforcement.hyperparameters.loss`, validated by TrainConfig with a 400 naming the
field, and trained over HTTP by a real `celery worker` process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.hyperparameters import PARAM, resolve_hyperparameters
from tests.worker.conftest import Workers, wait_for
from tests.worker.test_worker import GRADER, metric_steps, status, submit, upload

# loss_type: a metric only that method logs (docs/metrics.md, "Entropy baselines")
BASELINES = {"ce_gppo": "policy/dual_clip_frac", "erc": "policy/erc_kept_frac",
             "entropic": "policy/entropic_alpha", "aent": "entropy/clamped"}


@pytest.mark.parametrize("loss_type", list(BASELINES))
def test_hyperparameters_select_each_baseline_with_its_knobs(loss_type: str) -> None:
    knobs = {"ce_gppo_beta1": 0.5, "erc_low": 0.9, "entropic_target": 0.2, "aent_clamp": 0.4}
    hp = resolve_hyperparameters({"use_paec": False, "loss": {"loss_type": loss_type, **knobs}},
                                 training_rows=10)
    assert hp.config["loss"]["loss_type"] == loss_type
    assert {k: hp.config["loss"][k] for k in knobs} == knobs
    assert hp.echo["loss"]["loss_type"] == loss_type


@pytest.mark.parametrize(("loss", "field"), [
    ({"loss_type": "gppo"}, "loss_type"),
    ({"dual_clip": 1.0}, "dual_clip"),
    ({"ce_gppo_beta1": -1}, "ce_gppo_beta1"),
    ({"erc_low": 1.1}, "erc_high"),  # the band is checked as a pair, at its upper end
    ({"erc_high": "wide"}, "erc_high"),
    ({"entropic_ki": -0.01}, "entropic_ki"),
    ({"entropic_high_prob": 1.0}, "entropic_high_prob"),
    ({"aent_clamp": 1.0}, "aent_clamp"),
    ({"aent_coef": 10**400}, "aent_coef"),
])
def test_bad_baseline_knobs_are_refused_over_http_naming_the_field(
        user: httpx.Client, loss: dict[str, Any], field: str) -> None:
    body = {"model": "local:tiny", "training_file": upload(user),
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": {"use_paec": False, "loss": loss}}}}
    r = user.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == f"{PARAM}.loss.{field}", error


def test_every_baseline_job_is_trained_by_a_worker(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session]) -> None:
    file_id = upload(user)
    jobs = {lt: submit(user, file_id, steps=2, use_paec=False, update_epochs=2,
                       loss={"loss_type": lt}) for lt in BASELINES}
    for lt, job_id in jobs.items():
        echoed = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert echoed["method"]["reinforcement"]["hyperparameters"]["loss"]["loss_type"] == lt
    workers.start()

    def finished() -> bool:
        return all(status(user, job_id) in ("succeeded", "failed") for job_id in jobs.values())

    wait_for(finished, timeout=300, what="the baseline jobs to finish", log=workers.log)
    for lt, job_id in jobs.items():
        job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert job["status"] == "succeeded", (lt, job, workers.log())
        assert metric_steps(worker_sessions, job_id, BASELINES[lt]) == [1, 2], lt
        assert metric_steps(worker_sessions, job_id, "loss/policy") == [1, 2], lt
