"""The `paec` command against the real API over HTTP (no worker: job progress is arranged by
writing the rows a worker would write): files, job submission with uploads and overrides
(and no orphan file after a refused one), the method each job trains, status, events, state
changes, following the live stream (queued, success, failure, pause, a dropped connection),
metrics CSV, comparing jobs, checkpoint downloads (sha256, unpacking, resuming a partial
file), graders, evaluations (their progress, the defaults --help shows), and the errors a
user meets (wrong key, server down)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.routes import stream
from store.checkpoints import register_checkpoint
from store.db import transaction
from store.evaluations import finish_evaluation
from store.metrics import record_metrics
from store.models import Checkpoint, Evaluation, Job
from store.storage import LocalStorage
from tests.client.conftest import (
    DroppingProxy,
    Paec,
    add_step,
    later,
    method,
    set_status,
    step_metrics,
)
from tests.service import ROOT, free_port, make_file, make_job

Sessions = sessionmaker[Session]
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
DATASET = b"".join(b'{"prompt": "What is %d + 1?", "answer": "%d"}\n' % (i, i + 1)
                   for i in range(4))


def job_row(sessions: Sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(DATASET)
    return path


# ---- files ----

def test_an_uploaded_file_is_listed_in_the_table_and_in_json(paec: Paec, dataset: Path) -> None:
    up = paec("files", "upload", str(dataset), "--json")
    assert up.code == 0, up.err
    file_id = json.loads(up.out)["id"]
    table = paec("files", "list")
    assert table.code == 0
    header, row = table.out.splitlines()[:2]
    assert header.split()[:4] == ["ID", "FILENAME", "BYTES", "ROWS"]
    assert row.split()[:5] == [file_id, "train.jsonl", str(len(DATASET)), "4", "processed"]
    listed = json.loads(paec("files", "list", "--json").out)
    assert [f["id"] for f in listed["data"]] == [file_id]
    assert paec("files", "delete", file_id).out.strip() == f"deleted {file_id}"
    assert paec("files", "list").out.strip() == "no files"


# ---- jobs ----

def test_submit_uploads_the_training_path_and_applies_set_overrides(
        paec: Paec, dataset: Path, tmp_path: Path, sessions: Sessions) -> None:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({
        "model": "builtin:smollm2-135m-instruct", "training_path": dataset.name,
        "grader": GRADER, "suffix": "cli", "seed": 7, "metadata": {"team": "rl"},
        "hyperparameters": {"steps": 3, "batch_size": 2, "group_size": 2}}))
    run = paec("jobs", "submit", str(config), "--json", "--set", "group_size=4",
               "--set", "paec.quantile=0.7", "--set", "loss.clip_high=0.3")
    assert run.code == 0, run.err
    job = json.loads(run.out)
    hyper = job["method"]["reinforcement"]["hyperparameters"]
    assert (hyper["group_size"], hyper["paec"]["quantile"], hyper["loss"]["clip_high"]) == (
        4, 0.7, 0.3)
    assert (job["seed"], job["user_provided_suffix"], job["metadata"]) == (7, "cli",
                                                                            {"team": "rl"})
    assert f"as {job['training_file']}" in run.err  # the upload was reported
    uploaded = json.loads(paec("files", "show", job["training_file"], "--json").out)
    assert (uploaded["filename"], uploaded["rows"]) == ("train.jsonl", 4)
    assert job_row(sessions, job["id"]).config["group_size"] == 4


def test_a_submit_retried_with_its_idempotency_key_creates_one_job(
        paec: Paec, tmp_path: Path, sessions: Sessions, tenant: tuple[str, str]) -> None:
    file_id = make_file(sessions, tenant[0], rows=4)
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model": "builtin:smollm2-135m-instruct",
                                  "training_file": file_id, "grader": GRADER}))
    first = paec("jobs", "submit", str(config), "--json", "--idempotency-key", "retry-1")
    again = paec("jobs", "submit", str(config), "--json", "--idempotency-key", "retry-1")
    assert json.loads(first.out)["id"] == json.loads(again.out)["id"]
    assert len(json.loads(paec("jobs", "list", "--json").out)["data"]) == 1


def test_an_invalid_config_prints_the_apis_message_code_and_param(
        paec: Paec, tmp_path: Path, sessions: Sessions, tenant: tuple[str, str]) -> None:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model": "builtin:smollm2-135m-instruct",
                                  "training_file": make_file(sessions, tenant[0])}))
    run = paec("jobs", "submit", str(config))
    assert run.code == 1
    assert "HTTP 400" in run.err and "param method.reinforcement.grader" in run.err


def test_a_refused_submit_deletes_the_file_it_uploaded(paec: Paec, dataset: Path,
                                                      tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model": "builtin:smollm2-135m-instruct",
                                  "training_path": dataset.name}))  # no grader: refused
    run = paec("jobs", "submit", str(config))
    assert run.code == 1 and "param method.reinforcement.grader" in run.err
    uploaded = re.search(r"as (file-\w+)", run.err)
    assert uploaded is not None, run.err  # it did upload, then deleted the file again
    assert f"deleted {uploaded.group(1)} again (the job was not created)" in run.err
    assert paec("files", "list").out.strip() == "no files"


def test_a_bad_set_override_is_refused_before_anything_is_uploaded(
        paec: Paec, dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model": "builtin:smollm2-135m-instruct",
                                  "training_path": dataset.name, "grader": GRADER}))
    run = paec("jobs", "submit", str(config), "--set", "paec.quantile")
    assert run.code == 1 and "--set takes key=value" in run.err
    assert "uploaded" not in run.err
    assert paec("files", "list").out.strip() == "no files"


def test_jobs_list_filters_by_metadata(paec: Paec, sessions: Sessions,
                                       tenant: tuple[str, str]) -> None:
    keep = make_job(sessions, tenant[0], metadata_={"team": "rl"})
    make_job(sessions, tenant[0], metadata_={"team": "other"})
    run = paec("jobs", "list", "--metadata", "team=rl")
    assert [line.split()[0] for line in run.out.splitlines()[1:]] == [keep]


def test_status_shows_the_step_and_the_latest_metrics(paec: Paec, sessions: Sessions,
                                                      tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running", total_steps=5)
    for step in (1, 2, 3):
        add_step(sessions, job_id, step, 5)
    run = paec("jobs", "status", job_id)
    assert run.code == 0, run.err
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in run.out.splitlines())
    assert (fields["status"], fields["step"]) == ("running", "3/5")
    assert (fields["reward"], fields["masked entropy"], fields["floor"]) == ("0.3", "0.53",
                                                                             "0.4")
    as_json = json.loads(paec("jobs", "status", job_id, "--json").out)
    assert as_json["latest_metrics"] == step_metrics(3)


def test_list_and_status_show_the_method_each_job_trains(paec: Paec, sessions: Sessions,
                                                        tenant: tuple[str, str]) -> None:
    jobs = {
        make_job(sessions, tenant[0], method=method(use_paec=True, loss={
            "loss_type": "grpo", "entropy_coef": 0.0})): "PAEC",
        make_job(sessions, tenant[0], method=method(use_paec=False, loss={
            "loss_type": "grpo", "entropy_coef": 0.01})): "GRPO + entropy",
        make_job(sessions, tenant[0], method=method(use_paec=False, loss={
            "loss_type": "grpo", "high_entropy_quantile": 0.8})): "GRPO + 80/20",
        make_job(sessions, tenant[0], method=method(use_paec=True, loss={
            "loss_type": "cispo"})): "PAEC (CISPO)",
        make_job(sessions, tenant[0], method=method(use_paec=False, loss={
            "loss_type": "a_new_loss"})): "a_new_loss",
    }
    run = paec("jobs", "list")
    header, *rows = run.out.splitlines()
    assert re.split(r"\s{2,}", header)[:3] == ["ID", "STATUS", "METHOD"]
    assert {re.split(r"\s{2,}", r)[0]: re.split(r"\s{2,}", r)[2] for r in rows} == jobs
    for job_id, name in jobs.items():
        fields = dict(re.split(r"\s{2,}", line, maxsplit=1)
                      for line in paec("jobs", "status", job_id).out.splitlines())
        assert fields["method"] == name
        as_json = json.loads(paec("jobs", "status", job_id, "--json").out)
        assert as_json["method_name"] == name


def test_events_are_printed_oldest_first(paec: Paec, sessions: Sessions,
                                         tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0])
    for text in ("first", "second", "third"):
        set_status(sessions, job_id, "queued", text)
    run = paec("jobs", "events", job_id, "--limit", "2")
    assert [line.split()[-1] for line in run.out.splitlines()[1:]] == ["second", "third"]


def test_pause_resume_and_cancel_change_the_jobs_status(paec: Paec, sessions: Sessions,
                                                       tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0])
    assert paec("jobs", "pause", job_id).out.strip() == f"{job_id} is paused"
    assert paec("jobs", "resume", job_id).out.strip() == f"{job_id} is queued"
    assert json.loads(paec("jobs", "cancel", job_id, "--json").out)["status"] == "cancelled"
    again = paec("jobs", "resume", job_id)
    assert again.code == 1 and "HTTP 409" in again.err


# ---- follow ----

def test_follow_shows_progress_and_exits_0_when_the_job_succeeds(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running", total_steps=4)
    add_step(sessions, job_id, 1, 4)

    def finish() -> None:
        add_step(sessions, job_id, 2, 4)
        set_status(sessions, job_id, "succeeded", "The job has successfully completed")
    thread = later(0.8, finish)
    run = paec("jobs", "follow", job_id)
    thread.join()
    assert run.code == 0, run.err
    assert "[##############..............] 2/4 reward 0.2" in run.err
    assert "masked 0.52 (floor 0.4)" in run.err
    assert "The job has successfully completed" in run.out
    assert f"{job_id} succeeded" in run.out


def test_follow_prints_the_status_while_queued_and_when_it_changes(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "KEEPALIVE_S", 0.5)  # the server's silence before a keep-alive
    job_id = make_job(sessions, tenant[0], status="queued", total_steps=2)
    set_status(sessions, job_id, "queued", "Job queued")

    def start_and_finish() -> None:
        set_status(sessions, job_id, "running", "Training started on w1 (attempt 1)")
        time.sleep(1.5)  # a few stream polls: follow sees the job running before its steps
        for step in (1, 2):
            add_step(sessions, job_id, step, 2)
        set_status(sessions, job_id, "succeeded", "The job has successfully completed")
    thread = later(2.0, start_and_finish)
    run = paec("jobs", "follow", job_id)
    thread.join()
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"{job_id} is queued (waiting for a worker)", run.out
    assert any(line.startswith(f"{job_id} is still queued (") for line in lines)
    changed = lines.index(f"{job_id}: queued -> running")
    assert lines.index(next(x for x in lines if "Training started" in x)) < changed
    assert "] 2/2 reward 0.2" in run.err
    assert lines[-1].startswith(f"{job_id} succeeded")


def test_follow_exits_1_and_prints_the_error_when_the_job_fails(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    thread = later(0.5, set_status, sessions, job_id, "failed", "The job failed",
                   {"code": "grader_error", "message": "the grader failed on every sample",
                    "param": "method.reinforcement.grader"})
    run = paec("jobs", "follow", job_id)
    thread.join()
    assert run.code == 1
    assert (f"{job_id} failed: the grader failed on every sample (code grader_error, "
            "param method.reinforcement.grader)") in run.err


def test_follow_exits_0_saying_so_when_the_job_is_paused(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    thread = later(0.5, set_status, sessions, job_id, "paused", "Job paused")
    run = paec("jobs", "follow", job_id)
    thread.join()
    assert run.code == 0, run.err
    assert f"{job_id} is paused" in run.out and "paec jobs resume" in run.out


def test_follow_resumes_after_a_dropped_connection_without_repeating_events(
        paec: Paec, proxy: DroppingProxy, sessions: Sessions, tenant: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAEC_API_URL", proxy.url)
    job_id = make_job(sessions, tenant[0], status="running")
    set_status(sessions, job_id, "running", "before the drop")
    thread = later(1.5, set_status, sessions, job_id, "succeeded", "after the drop")
    run = paec("jobs", "follow", job_id)
    thread.join()
    assert run.code == 0, run.err
    assert proxy.dropped
    assert "connection lost" in run.out
    assert run.out.count("before the drop") == 1 and run.out.count("after the drop") == 1


# ---- metrics and checkpoints ----

def test_metrics_csv_writes_every_step(paec: Paec, sessions: Sessions, tenant: tuple[str, str],
                                       tmp_path: Path) -> None:
    job_id = make_job(sessions, tenant[0], status="running", total_steps=5)
    for step in range(1, 6):
        add_step(sessions, job_id, step, 5)
    out = tmp_path / "metrics.csv"
    run = paec("jobs", "metrics", job_id, "--names", "reward/mean,paec/floor", "--csv",
               str(out))
    assert run.code == 0, run.err
    lines = out.read_text().splitlines()
    assert lines[0] == "step,reward/mean,paec/floor"
    assert lines[1:] == [f"{s},{s / 10!r},0.4" for s in range(1, 6)]


def test_compare_shows_each_jobs_method_metrics_and_eval_scores(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str]) -> None:
    paec_job = make_job(sessions, tenant[0], status="succeeded", total_steps=3)
    grpo_job = make_job(sessions, tenant[0], status="running", total_steps=3,
                        method=method(use_paec=False))
    for step in (1, 2, 3):
        add_step(sessions, paec_job, step, 3)
    add_step(sessions, grpo_job, 1, 3)
    with transaction(sessions) as session:
        record_metrics(session, paec_job, 2, {"eval/avg@4": 0.25, "eval/pass@4": 0.5})
        record_metrics(session, paec_job, 3, {"eval/avg@4": 0.5, "eval/pass@4": 0.75})
    run = paec("jobs", "compare", paec_job, grpo_job)
    assert run.code == 0, run.err
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip())
                                              for line in run.out.splitlines()[1:])}
    assert run.out.splitlines()[0].split() == [paec_job, grpo_job]
    assert rows["method"] == ["PAEC", "GRPO"]
    assert rows["status"] == ["succeeded", "running"]
    assert rows["step"] == ["3/3", "1/3"]
    assert rows["reward/mean first"] == ["0.1", "0.1"]
    assert rows["reward/mean last"] == ["0.3", "0.1"]
    assert rows["reward/mean mean"] == ["0.2", "0.1"]
    assert rows["entropy/masked last"] == ["0.53", "0.51"]
    assert rows["eval step"] == ["3", "-"]
    assert rows["eval/avg@4"] == ["0.5", "-"] and rows["eval/pass@4"] == ["0.75", "-"]
    assert "reward/accuracy first" not in rows  # neither job logged it
    data = json.loads(paec("jobs", "compare", paec_job, grpo_job, "--json").out)["data"]
    assert [d["id"] for d in data] == [paec_job, grpo_job]
    assert data[0]["metrics"]["paec/floor"] == pytest.approx(
        {"first": 0.4, "last": 0.4, "mean": 0.4, "points": 3})
    assert (data[0]["eval"], data[0]["eval_step"]) == ({"avg@4": 0.5, "pass@4": 0.75}, 3)
    assert data[1]["eval"] == {} and data[1]["eval_step"] is None


@pytest.fixture
def checkpoint(sessions: Sessions, storage: LocalStorage, tenant: tuple[str, str],
               tmp_path: Path) -> Checkpoint:
    """A checkpoint of the fresh tenant: a folder of a config and ~3 MB of weights."""
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "sub" / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    job_id = make_job(sessions, tenant[0], status="running")
    with transaction(sessions) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        return register_checkpoint(session, storage, job, 2, folder, full_state=True,
                                   metrics={"reward/mean": 0.5})


def test_a_checkpoint_is_downloaded_checked_and_unpacked(
        paec: Paec, checkpoint: Checkpoint, tmp_path: Path) -> None:
    listed = paec("checkpoints", "list", checkpoint.job_id)
    assert listed.out.splitlines()[1].split()[:2] == [checkpoint.id, "2"]
    out = tmp_path / "model"
    run = paec("checkpoints", "download", checkpoint.id, "-o", str(out))
    assert run.code == 0, run.err
    assert "sha256 verified" in run.out and "3.0 MiB/3.0 MiB" in run.err
    assert (out / "config.json").read_text() == '{"model_type": "llama"}'
    weights = (tmp_path / "ckpt" / "sub" / "model.safetensors").read_bytes()
    assert (out / "sub" / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "sub"]  # no tar left


def test_a_partial_download_is_resumed_from_its_part_file(
        paec: Paec, checkpoint: Checkpoint, storage: LocalStorage, tmp_path: Path) -> None:
    archive = storage.path(checkpoint.storage_key).read_bytes()
    out = tmp_path / "dl"
    out.mkdir()
    (out / f"{checkpoint.id}.tar.part").write_bytes(archive[:1_000_000])
    run = paec("checkpoints", "download", checkpoint.id, "-o", str(out), "--no-extract")
    assert run.code == 0, run.err
    assert (out / f"{checkpoint.id}.tar").read_bytes() == archive
    assert not (out / f"{checkpoint.id}.tar.part").exists()


def test_a_part_file_that_is_not_a_prefix_fails_the_sha256_check_and_is_deleted(
        paec: Paec, checkpoint: Checkpoint, tmp_path: Path) -> None:
    # Only the bytes after the .part are fetched (Range), so a wrong prefix must be caught
    # by the checksum, not papered over by a whole new download.
    out = tmp_path / "dl"
    out.mkdir()
    part = out / f"{checkpoint.id}.tar.part"
    part.write_bytes(b"\0" * 1000)
    run = paec("checkpoints", "download", checkpoint.id, "-o", str(out))
    assert run.code == 1
    assert "code checksum_mismatch" in run.err
    assert not part.exists() and not (out / f"{checkpoint.id}.tar").exists()


# ---- graders and evaluations ----

def test_graders_run_prints_the_reward(paec: Paec, tmp_path: Path) -> None:
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    right = paec("graders", "run", str(grader), "--sample", "5", "--item", '{"answer": "5"}')
    assert right.code == 0, right.err
    assert right.out.splitlines()[0].split() == ["reward", "1"]
    wrong = paec("graders", "run", str(grader), "--sample", "4", "--item", '{"answer": "5"}',
                 "--json")
    assert json.loads(wrong.out)["reward"] == 0.0


def test_eval_wait_prints_the_results_once_the_evaluation_succeeds(
        paec: Paec, sessions: Sessions, tenant: tuple[str, str]) -> None:
    def finish() -> None:
        # The worker's part: claim this tenant's queued evaluation and write its results
        # (the database is shared with the API's tests, which leave evaluations queued).
        while True:
            with transaction(sessions) as session:
                ev = session.scalars(select(Evaluation).where(
                    Evaluation.status == "queued", Evaluation.tenant_id == tenant[0])
                    .order_by(Evaluation.seq.desc()).limit(1)).first()
                if ev is not None:
                    ev.status, ev.worker_id = "running", "cli-test"
                    break
            time.sleep(0.1)
        time.sleep(0.6)  # running for a few polls, as a real evaluation is
        with transaction(sessions) as session:
            finish_evaluation(session, ev.id, {"builtin:add": {"avg@2": 0.25, "pass@2": 0.5,
                                                               "maj@2": 0.0, "n": 8}},
                              worker_id="cli-test")
    thread = later(0.0, finish)
    run = paec("eval", "builtin:smollm2-135m-instruct", "--dataset", "builtin:add",
               "--k", "2", "--size", "8", "--wait", "--interval", "0.2")
    thread.join()
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["DATASET      avg@2  maj@2  pass@2  n",
                                    "builtin:add  0.25   0      0.5     8"]
    progress = [line.split()[1:] for line in run.err.splitlines() if line.startswith("eval-")]
    assert [p[0] for p in progress] == ["queued", "running", "succeeded"], run.err
    assert all(re.fullmatch(r"\((\d+m)?\d+s\)", p[1]) for p in progress)


# ---- errors, and the installed command ----

def test_a_wrong_key_exits_1_naming_the_error_code(paec: Paec) -> None:
    run = paec("files", "list", "--api-key", "sk-not-a-key")
    assert run.code == 1
    assert "HTTP 401" in run.err and "code invalid_api_key" in run.err


def test_a_server_that_is_down_exits_1_naming_the_url(paec: Paec) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = paec("jobs", "list", "--api-url", url)
    assert run.code == 1
    assert f"cannot reach the paec API at {url}" in run.err and "PAEC_API_URL" in run.err


def test_the_installed_command_runs_as_a_subprocess(server: str, tenant: tuple[str, str],
                                                    dataset: Path) -> None:
    script = Path(sys.executable).parent / "paec"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "client.cli"]
    env = os.environ | {"PAEC_API_URL": server, "PAEC_API_KEY": tenant[1]}
    out = subprocess.run([*command, "files", "upload", str(dataset)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "train.jsonl" in out.stdout and "processed" in out.stdout
    usage = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert "checkpoints" in usage.stdout
