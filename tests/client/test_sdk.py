"""The Python SDK (client/sdk.py) against the live service: one tiny job, trained by a real
`celery worker` once for the module (3 steps, traces, an evaluation at the end), read back
through every native route the SDK covers; evaluations created and waited for; the API's
errors as PaecError; and the example of docs/sdk.md, run as it is written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.sdk import LOSS_NAMES, Evaluation, Paec, PaecError, method_of
from tests.client.conftest import Live
from tests.service import ROOT
from tests.worker.conftest import TINY_HYPERPARAMETERS, wait_for

ROWS = [{"prompt": f"What is {a} + {b}? Answer with just the number.", "answer": str(a + b)}
        for a in range(1, 5) for b in range(1, 4)]
# Fuzzy similarity varies within a group, so every step of a random tiny model updates.
GRADER = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
STEPS = 3
pytestmark = pytest.mark.slow  # one tiny job trained by a real worker for the module


def dataset(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def sdk(live: Live) -> Iterator[Paec]:
    with Paec(live.url, live.key) as client:
        yield client


@pytest.fixture(scope="module")
def job(sdk: Paec, live: Live) -> dict[str, Any]:
    """A finished tiny job of the module's tenant: 3 steps, checkpoints at 2 and 3, 2 traces
    a step, and an evaluation of its validation set at the end."""
    train = sdk.json("POST", "/v1/files", files={"file": ("train.jsonl", dataset(ROWS))},
                     data={"purpose": "fine-tune"})["id"]
    heldout = sdk.json("POST", "/v1/files", files={"file": ("heldout.jsonl", dataset(ROWS[:3]))},
                       data={"purpose": "fine-tune"})["id"]
    created = sdk.create_job({
        "model": "local:tiny", "training_file": train, "validation_file": heldout, "seed": 3,
        "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            **TINY_HYPERPARAMETERS, "steps": STEPS, "trace_samples": 2, "eval_samples": 2}}}},
        "sdk-test-job")
    done = wait_for(lambda: (j := sdk.get_job(created["id"]))["status"] in (
        "succeeded", "failed", "cancelled") and j, timeout=300, what="the tiny job",
        log=live.workers.log)
    assert done["status"] == "succeeded", (done, live.workers.log())
    return dict(done)


def test_job_metrics_are_series_by_name_downsampled_or_full(sdk: Paec,
                                                            job: dict[str, Any]) -> None:
    series = sdk.job_metrics(job["id"], ["reward/mean", "entropy"])
    assert set(series) == {"reward/mean", "entropy"}
    reward = series["reward/mean"]
    assert reward.steps == [1, 2, 3] and len(reward.values) == 3
    assert reward.points == list(zip([1, 2, 3], reward.values, strict=True))
    assert (reward.first, reward.last) == (reward.values[0], reward.values[-1])
    assert reward.mean == pytest.approx(sum(reward.values) / 3)
    full = sdk.job_metrics(job["id"], full=True)
    assert full["reward/mean"].values == reward.values  # CSV and JSON agree
    assert {"entropy", "entropy/masked", "eval/avg@2"} <= set(full)
    window = sdk.job_metrics(job["id"], ["reward/mean"], start=2, end=3)["reward/mean"]
    assert window.steps == [2, 3]
    ends = sdk.job_metrics(job["id"], ["reward/mean"], max_points=2)["reward/mean"]
    assert ends.steps == [1, 3]


def test_events_replay_the_job_and_resume_after_an_event_id(sdk: Paec,
                                                           job: dict[str, Any]) -> None:
    events = list(sdk.events(job["id"]))
    assert events[-1].event == "end" and events[-1].status == "succeeded"
    steps = [e.payload["step"] for e in events if e.event == "metrics"
             and "total_steps" in e.payload]
    assert steps == [1, 2, 3]
    assert "The job has successfully completed" in [e.message for e in events]
    assert all(e.id and e.id.startswith("ftevent-") for e in events[:-1])
    middle = len(events) // 2
    resumed = list(sdk.events(job["id"], after=events[middle].id))
    assert [e.id for e in resumed] == [e.id for e in events[middle + 1:]]


def test_traces_and_their_steps(sdk: Paec, job: dict[str, Any]) -> None:
    assert sdk.trace_steps(job["id"]) == [1, 2, 3]
    newest = sdk.traces(job["id"])
    assert (newest.job_id, newest.step, [s.index for s in newest.samples]) == (
        job["id"], 3, [0, 1])
    first = sdk.traces(job["id"], step=1)
    assert first.step == 1
    for sample in first.samples:
        n = len(sample.tokens)
        assert 0 < n <= TINY_HYPERPARAMETERS["max_new_tokens"]
        assert all(len(getattr(sample, k)) == n for k in (
            "entropy", "top_p_entropy", "mask", "nucleus_size", "top_two_gap"))


def test_a_checkpoint_is_described_and_downloaded_with_its_sha256_checked(
        sdk: Paec, job: dict[str, Any], tmp_path: Path) -> None:
    ckpts = sdk.checkpoints(job["id"])
    assert [c.step for c in ckpts] == [3, 2]
    info = sdk.checkpoint(ckpts[0].id)
    assert (info.job_id, info.step, info.full_state) == (job["id"], 3, True)
    assert info.model.startswith("ft:tiny:")
    sent: list[httpx.URL] = []
    sdk.http.event_hooks["request"].append(lambda request: sent.append(request.url))
    try:
        model = sdk.download(info.id, tmp_path / "model.tar")
        full = sdk.download(info.id, tmp_path / "full.tar", contents="full")
    finally:
        sdk.http.event_hooks["request"].clear()
    assert hashlib.sha256(full.read_bytes()).hexdigest() == info.sha256
    assert full.stat().st_size == info.bytes
    assert hashlib.sha256(model.read_bytes()).hexdigest() == info.model_sha256
    assert model.stat().st_size == info.model_bytes
    for archive in (model, full):
        with tarfile.open(archive) as tar:
            assert any(name.endswith("config.json") for name in tar.getnames())
    assert not (tmp_path / "model.tar.part").exists()
    downloads = [u for u in sent if u.path.endswith("/download")]
    # `contents` goes out only as given; the HTTP layer names the route's default itself.
    assert [u.params.get("contents") for u in downloads] == ["model", "full"]


def test_an_evaluation_is_created_and_waited_for(sdk: Paec, job: dict[str, Any]) -> None:
    created = sdk.evaluate(job["fine_tuned_model"], ["builtin:add"], k=2, size=4,
                           max_new_tokens=8, seed=None)
    assert (created.status, created.k, created.settings["size"]) == ("queued", 2, 4)
    assert created.settings["seed"] == 0  # None: the server's default
    polls: list[tuple[str, float]] = []
    done = sdk.wait_evaluation(created.id, interval=0.5, timeout=300,
                               on_poll=lambda ev, waited: polls.append((ev.status, waited)))
    assert isinstance(done, Evaluation) and done.done
    assert done.status == "succeeded", done.error
    assert done.results is not None
    assert set(done.results["builtin:add"]) >= {"avg@2", "pass@2", "maj@2", "n"}
    assert done.results["builtin:add"]["n"] == 4
    assert polls[-1][0] == "succeeded"
    assert [w for _, w in polls] == sorted(w for _, w in polls)


def test_api_errors_raise_paec_error_with_the_envelope(sdk: Paec, live: Live,
                                                       job: dict[str, Any]) -> None:
    with pytest.raises(PaecError) as missing:
        sdk.traces("ftjob-doesnotexist")
    assert (missing.value.status, missing.value.param) == (404, "job_id")
    with pytest.raises(PaecError) as no_step:
        sdk.traces(job["id"], step=99)
    assert (no_step.value.status, no_step.value.param) == (404, "step")
    with pytest.raises(PaecError) as bad_k:
        sdk.evaluate("local:tiny", ["builtin:add"], k=0)
    assert (bad_k.value.status, bad_k.value.param) == (400, "k")
    assert bad_k.value.code and bad_k.value.message
    with Paec(live.url, "sk-not-a-key") as stranger, pytest.raises(PaecError) as denied:
        stranger.job_metrics(job["id"])
    assert (denied.value.status, denied.value.code) == (401, "invalid_api_key")


def test_summarize_gives_the_method_metrics_and_last_evaluation(sdk: Paec,
                                                               job: dict[str, Any]) -> None:
    summary = sdk.summarize(job["id"])
    assert (summary.method, summary.status, summary.step, summary.total_steps) == (
        "PAEC", "succeeded", STEPS, STEPS)
    assert summary.metrics["reward/mean"].steps == [1, 2, 3]
    assert summary.eval_step == STEPS and set(summary.evals) == {"avg@2", "pass@2", "maj@2"}


def test_method_names_are_the_dashboards() -> None:
    script = (ROOT / "api/static/dashboard/js/format.js").read_text()
    match = re.search(r"const LOSS_NAMES = \{([^}]*)\}", script)
    assert match is not None
    dashboard = dict(re.findall(r"(\w+): \"([^\"]+)\"", match.group(1)))
    assert dashboard == LOSS_NAMES

    def job(**hyper: Any) -> dict[str, Any]:
        return {"method": {"reinforcement": {"hyperparameters": hyper}}}
    assert method_of(job()) == "PAEC"
    assert method_of(job(use_paec=False, loss={"loss_type": "grpo"})) == "GRPO"
    assert method_of(job(use_paec=False, loss={"entropy_coef": 0.01})) == "GRPO + entropy"
    assert method_of(job(use_paec=False, loss={"high_entropy_quantile": 0.8})) == "GRPO + 80/20"
    assert method_of(job(use_paec=False, loss={"loss_type": "kl_cov"})) == "KL-Cov"
    assert method_of(job(loss={"loss_type": "clip_cov"})) == "PAEC (Clip-Cov)"
    assert method_of(job(paec={"penalty_weight": 0.0})) == "GRPO"
    assert method_of(job(use_paec=False, loss={"loss_type": "gspo"})) == "gspo"


def test_the_example_in_docs_sdk_runs(live: Live, job: dict[str, Any]) -> None:
    doc = (ROOT / "docs/sdk.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert blocks, "docs/sdk.md has no python example"
    env = os.environ | {"PAEC_API_URL": live.url, "PAEC_API_KEY": live.key}
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert job["id"] in out.stdout and "succeeded" in out.stdout, out.stdout
