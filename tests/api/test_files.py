"""/v1/files after the upload, over real HTTP: listing and its cursors, retrieve, content and
delete, another tenant's view (404 and an empty list), the holds of unfinished jobs and
evaluations on their files, expiry and its sweep, and the store functions the worker and the
jobs API call. Uploads are in test_file_uploads.py."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from store import files
from store.db import transaction, utcnow
from store.errors import ConflictError, NotFoundError
from store.models import Evaluation, File, Job
from store.storage import LocalStorage
from tests.api.datasets import PROMPT_ROWS, jsonl, row_count, stored_names, upload, write
from tests.service import make_job, new_tenant_key

# ---- list ----

@pytest.fixture
def three_files(http: httpx.Client) -> list[str]:
    """Ids of three uploads, oldest first."""
    ids = []
    for i in range(3):
        r = upload(http, f"f{i}.jsonl", jsonl(PROMPT_ROWS[i:i + 1]))
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


def test_list_is_newest_first_with_cursor_fields(http: httpx.Client,
                                                 three_files: list[str]) -> None:
    body = http.get("/v1/files").json()
    assert body["object"] == "list"
    assert [f["id"] for f in body["data"]] == three_files[::-1]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (
        three_files[2], three_files[0], False)


def test_list_pages_with_after_and_limit(http: httpx.Client, three_files: list[str]) -> None:
    first = http.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in first["data"]] == [three_files[2], three_files[1]]
    assert first["has_more"] is True
    second = http.get("/v1/files", params={"limit": 2, "after": first["last_id"]}).json()
    assert [f["id"] for f in second["data"]] == [three_files[0]]
    assert second["has_more"] is False


def test_list_ascending_walks_oldest_first(http: httpx.Client, three_files: list[str]) -> None:
    page = http.get("/v1/files", params={"order": "asc", "after": three_files[0]}).json()
    assert [f["id"] for f in page["data"]] == three_files[1:]


def test_official_client_pages_through_every_file(openai_client: OpenAI,
                                                  three_files: list[str]) -> None:
    assert [f.id for f in openai_client.files.list(limit=1)] == three_files[::-1]


def test_list_filters_by_purpose(http: httpx.Client, three_files: list[str],
                                 tenant: tuple[str, str], sessions: sessionmaker[Session],
                                 storage: LocalStorage) -> None:
    with transaction(sessions) as session:
        result = files.create_result_file(session, storage, tenant[0], "metrics.csv",
                                          b"step,train_reward_mean\n1,0.5\n")
    body = http.get("/v1/files", params={"purpose": "fine-tune-results"}).json()
    assert [f["id"] for f in body["data"]] == [result.id]
    assert body["data"][0]["rows"] is None
    assert http.get(f"/v1/files/{result.id}/content").content == (
        b"step,train_reward_mean\n1,0.5\n")


@pytest.mark.parametrize(("params", "param"), [({"limit": 0}, "limit"),
                                               ({"limit": 10001}, "limit"),
                                               ({"order": "sideways"}, "order"),
                                               ({"after": "file-unknown"}, "after")])
def test_bad_list_parameters_are_400_naming_them(http: httpx.Client, params: dict[str, object],
                                                 param: str) -> None:
    r = http.get("/v1/files", params=params)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


# ---- retrieve, content, delete; isolation ----

def test_another_tenant_gets_404_and_an_empty_list(
        server: str, sessions: sessionmaker[Session], three_files: list[str]) -> None:
    _, other_key = new_tenant_key(sessions)
    other = OpenAI(base_url=server + "/v1", api_key=other_key, max_retries=0)
    target = three_files[0]
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(target)
    with pytest.raises(openai.NotFoundError):
        other.files.content(target)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(target)
    assert list(other.files.list()) == []


def test_the_owner_still_has_the_file_after_another_tenant_tried_to_delete_it(
        http: httpx.Client, server: str, sessions: sessionmaker[Session],
        three_files: list[str]) -> None:
    _, other_key = new_tenant_key(sessions)
    r = httpx.delete(f"{server}/v1/files/{three_files[0]}",
                     headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404
    assert http.get(f"/v1/files/{three_files[0]}").status_code == 200


@pytest.mark.parametrize("file_id", ["file-doesnotexist000000000000", "not-an-id",
                                     "x" * 300])
def test_missing_or_malformed_id_is_404(http: httpx.Client, file_id: str) -> None:
    r = http.get(f"/v1/files/{file_id}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_an_id_holding_a_nul_is_400_naming_it(http: httpx.Client) -> None:
    # api/edge.py refuses a NUL in a path segment before any route runs (never a 500).
    r = http.get("/v1/files/file-%00")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "file_id"


def test_delete_removes_the_row_and_the_bytes(openai_client: OpenAI, tmp_path: Path,
                                              tenant: tuple[str, str],
                                              storage: LocalStorage) -> None:
    with open(write(tmp_path, "train.jsonl", jsonl(PROMPT_ROWS)), "rb") as fh:
        created = openai_client.files.create(file=fh, purpose="fine-tune")
    deleted = openai_client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(created.id)
    assert stored_names(storage, tenant[0]) == []


def test_delete_of_a_file_a_queued_job_uses_is_409_and_the_file_survives(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session],
        three_files: list[str], storage: LocalStorage) -> None:
    job_id = make_job(sessions, tenant[0], status="queued", training_file=three_files[0])
    r = http.delete(f"/v1/files/{three_files[0]}")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert job_id in r.json()["error"]["message"]
    assert r.headers["x-should-retry"] == "false"
    assert http.get(f"/v1/files/{three_files[0]}").status_code == 200
    assert http.get(f"/v1/files/{three_files[0]}/content").content == jsonl(PROMPT_ROWS[:1])


def test_delete_of_a_validation_file_of_a_running_job_is_409(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session],
        three_files: list[str]) -> None:
    make_job(sessions, tenant[0], status="running", training_file=three_files[0],
             validation_file=three_files[1])
    assert http.delete(f"/v1/files/{three_files[1]}").status_code == 409


def test_delete_of_a_file_only_finished_jobs_used_succeeds(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session],
        three_files: list[str]) -> None:
    for status in ("succeeded", "failed", "cancelled"):
        make_job(sessions, tenant[0], status=status, training_file=three_files[0])
    r = http.delete(f"/v1/files/{three_files[0]}")
    assert (r.status_code, r.json()["deleted"]) == (200, True)


# ---- the functions the worker and the jobs API call ----

def test_a_share_locked_file_cannot_be_deleted_until_its_job_is_committed(
        tenant: tuple[str, str], sessions: sessionmaker[Session],
        three_files: list[str]) -> None:
    # What the jobs API does when it creates a job: lock the file FOR SHARE, insert, commit.
    file_id, outcome = three_files[0], []

    def delete() -> None:
        with sessions() as other:
            try:
                files.delete_file(other, tenant[0], file_id)
                other.commit()
                outcome.append("deleted")
            except ConflictError:
                outcome.append("conflict")

    with sessions() as creating:
        files.get_file(creating, tenant[0], file_id, for_share=True)
        deleting = threading.Thread(target=delete)
        deleting.start()
        deleting.join(0.5)
        assert deleting.is_alive()  # waits for the share lock
        make_job(sessions, tenant[0], training_file=file_id)
        creating.commit()
    deleting.join(10)
    assert outcome == ["conflict"]


def test_read_file_bytes_returns_the_upload_and_hides_other_tenants(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session],
        storage: LocalStorage) -> None:
    data = jsonl(PROMPT_ROWS)
    file_id = upload(http, "train.jsonl", data).json()["id"]
    other_id, _ = new_tenant_key(sessions)
    with sessions() as session:
        assert files.read_file_bytes(session, storage, tenant[0], file_id) == data
        with pytest.raises(NotFoundError):
            files.read_file_bytes(session, storage, other_id, file_id)


def test_a_row_that_cannot_be_stored_takes_its_bytes_with_it(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with sessions() as session, pytest.raises(IntegrityError):
        # No such tenant: the foreign key refuses the row after the bytes were written.
        files.create_result_file(session, storage, "org-missing", "metrics.csv", b"a,b\n")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []



# ---- files used by evaluations ----

def evaluate(http: httpx.Client, file_id: str) -> str:
    r = http.post("/api/evaluations", json={"model": "builtin:smollm2-135m-instruct",
                                            "datasets": ["builtin:add", file_id]})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_delete_of_a_file_an_unfinished_evaluation_uses_is_409_naming_the_file(
        http: httpx.Client, three_files: list[str], sessions: sessionmaker[Session]) -> None:
    queued = evaluate(http, three_files[0])
    running = evaluate(http, three_files[1])
    with transaction(sessions) as session:
        session.execute(update(Evaluation).where(Evaluation.id == running)
                        .values(status="running", worker_id="w"))
    for file_id, evaluation_id in ((three_files[0], queued), (three_files[1], running)):
        r = http.delete(f"/v1/files/{file_id}")
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("conflict", "file_id")
        assert file_id in error["message"] and evaluation_id in error["message"]
        assert http.get(f"/v1/files/{file_id}/content").status_code == 200
    http.post(f"/api/evaluations/{queued}/cancel")
    r = http.delete(f"/v1/files/{three_files[0]}")
    assert (r.status_code, r.json()["deleted"]) == (200, True)


# ---- expiry ----

def expire(sessions: sessionmaker[Session], file_id: str) -> None:
    """Move the file's expiry into the past (as if its `expires_after` had passed)."""
    with transaction(sessions) as session:
        session.execute(update(File).where(File.id == file_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))


def expiring_upload(http: httpx.Client) -> str:
    r = upload(http, "train.jsonl", jsonl(PROMPT_ROWS), **{"expires_after[anchor]": "created_at",
                                                            "expires_after[seconds]": "3600"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_an_expired_file_is_gone_for_its_tenant(http: httpx.Client,
                                                sessions: sessionmaker[Session]) -> None:
    file_id = expiring_upload(http)
    assert [f["id"] for f in http.get("/v1/files").json()["data"]] == [file_id]
    expire(sessions, file_id)
    assert http.get("/v1/files").json()["data"] == []
    for r in (http.get(f"/v1/files/{file_id}"), http.get(f"/v1/files/{file_id}/content"),
              http.delete(f"/v1/files/{file_id}")):
        assert r.status_code == 404, r.text
        assert r.json()["error"]["param"] == "file_id"


def test_an_expired_file_cannot_be_used_by_new_jobs_or_evaluations(
        http: httpx.Client, sessions: sessionmaker[Session]) -> None:
    file_id = expiring_upload(http)
    expire(sessions, file_id)
    job = http.post("/v1/fine_tuning/jobs", json={
        "model": "builtin:smollm2-135m-instruct", "training_file": file_id,
        "method": {"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "eq"}}}})
    assert job.status_code == 400, job.text
    assert job.json()["error"]["param"] == "training_file"
    evaluation = http.post("/api/evaluations", json={
        "model": "builtin:smollm2-135m-instruct", "datasets": [file_id]})
    assert evaluation.status_code == 400, evaluation.text
    assert evaluation.json()["error"]["param"] == "datasets[0]"


def test_the_sweep_removes_an_expired_file_once_nothing_unfinished_uses_it(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session],
        storage: LocalStorage, tmp_path: Path) -> None:
    file_id = expiring_upload(http)
    evaluation_id = evaluate(http, file_id)
    job_id = make_job(sessions, tenant[0], status="running", training_file=file_id)
    expire(sessions, file_id)
    with transaction(sessions) as session:
        key = files.get_file(session, tenant[0], file_id, include_expired=True).storage_key
        assert key not in files.purge_expired_files(session)  # both still use it
        # the worker still reads it for them
        files.copy_file_to(session, storage, tenant[0], file_id, tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == jsonl(PROMPT_ROWS)
    http.post(f"/api/evaluations/{evaluation_id}/cancel")
    with transaction(sessions) as session:
        assert key not in files.purge_expired_files(session)  # the job still uses it
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
    with transaction(sessions) as session:
        assert key in files.purge_expired_files(session)
    storage.delete(key)  # what the sweeper does after its commit
    assert row_count(sessions, tenant[0]) == 0 and stored_names(storage, tenant[0]) == []
