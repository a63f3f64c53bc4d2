"""/v1/files over real HTTP: the official client for the happy paths, httpx for the edges.
A bad or oversize upload must leave nothing behind: no row and no bytes in artifact storage."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.routes import files as files_routes
from store import files
from store.db import transaction, utcnow
from store.errors import ConflictError, NotFoundError
from store.models import Evaluation, File, Job
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import ROOT, make_job, new_tenant_key

MESSAGES_ROWS = [
    {"messages": [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": "What is 2 + 2?"}], "answer": "4"},
    {"messages": [{"role": "user", "content": "What is 3 * 3?"}], "answer": 9},
]
PROMPT_ROWS = [{"prompt": "What is 1 + 1?", "answer": "2"},
               {"prompt": "What is 5 - 3?", "answer": "2", "level": "easy"},
               {"prompt": "What is 2 ** 3?", "answer": 8}]


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def storage(service_settings: Settings) -> LocalStorage:
    return LocalStorage(service_settings.resolved_artifacts_dir)


def tenant_folder(storage: LocalStorage, tenant_id: str) -> Path:
    return storage.root / "files" / tenant_id


def stored_names(storage: LocalStorage, tenant_id: str) -> list[str]:
    folder = tenant_folder(storage, tenant_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def row_count(sessions: sessionmaker[Session], tenant_id: str) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(File)
                              .where(File.tenant_id == tenant_id)) or 0


def upload(http: httpx.Client, name: str, data: bytes, **fields: str) -> httpx.Response:
    return http.post("/v1/files", files={"file": (name, data)},
                     data={"purpose": "fine-tune", **fields})


# ---- upload ----

def test_messages_dataset_uploads_as_processed_with_its_row_count(
        openai_client: OpenAI, tmp_path: Path, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session]) -> None:
    data = jsonl(MESSAGES_ROWS)
    with open(write(tmp_path, "train.jsonl", data), "rb") as fh:
        created = openai_client.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.object, created.purpose, created.status) == ("file", "fine-tune",
                                                                 "processed")
    assert (created.filename, created.bytes) == ("train.jsonl", len(data))
    assert created.expires_at is None
    assert created.model_extra is not None and created.model_extra["rows"] == 2
    stored = storage.path(f"files/{tenant[0]}/{created.id}.jsonl")
    assert stored.read_bytes() == data
    with sessions() as session:
        row = files.get_file(session, tenant[0], created.id)
    assert row.sha256 == hashlib.sha256(data).hexdigest()


def test_prompt_answer_dataset_uploads_and_downloads_byte_for_byte(
        openai_client: OpenAI, tmp_path: Path) -> None:
    data = jsonl(PROMPT_ROWS)
    with open(write(tmp_path, "prompts.jsonl", data), "rb") as fh:
        created = openai_client.files.create(file=fh, purpose="fine-tune")
    assert created.model_extra is not None and created.model_extra["rows"] == 3
    assert openai_client.files.retrieve(created.id).model_dump() == created.model_dump()
    assert openai_client.files.content(created.id).read() == data


def test_expires_after_sets_expires_at_from_created_at(openai_client: OpenAI,
                                                       tmp_path: Path) -> None:
    with open(write(tmp_path, "train.jsonl", jsonl(PROMPT_ROWS)), "rb") as fh:
        created = openai_client.files.create(
            file=fh, purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 7200})
    assert created.expires_at == created.created_at + 7200


@pytest.mark.parametrize(("fields", "param"), [
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
     "expires_after.seconds"),
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
     "expires_after.anchor"),
    ({"expires_after[seconds]": "soon", "expires_after[anchor]": "created_at"},
     "expires_after.seconds"),
])
def test_bad_expires_after_is_400_naming_the_field(http: httpx.Client, fields: dict[str, str],
                                                  param: str) -> None:
    r = upload(http, "train.jsonl", jsonl(PROMPT_ROWS), **fields)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_bad_rows_are_listed_by_line_and_field_and_nothing_is_stored(
        openai_client: OpenAI, tmp_path: Path, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session]) -> None:
    data = (jsonl(PROMPT_ROWS[:1])
            + b'{"messages": [{"role": "robot", "content": "hi"}]}\n'
            + b"not json\n"
            + jsonl(PROMPT_ROWS[1:]))
    with open(write(tmp_path, "bad.jsonl", data), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="fine-tune")
    assert (caught.value.code, caught.value.param) == ("invalid_file", "file")
    message = caught.value.message
    assert "line 2: messages[0].role" in message
    assert "line 3: invalid JSON" in message
    assert "line 1" not in message and "line 4" not in message
    assert row_count(sessions, tenant[0]) == 0
    assert stored_names(storage, tenant[0]) == []


def test_a_large_upload_is_validated_apart_with_the_same_answers(
        http: httpx.Client, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    # Past files.VALIDATE_APART_BYTES the parse runs in a child process, so that a big
    # upload's CPU does not hold the API's GIL (bench/load.py): the same rows counted, the
    # same row errors by line, nothing stored for a bad one.
    # (The test server's upload limit is 2 MB: the threshold comes down to 64 KiB.)
    monkeypatch.setattr(files, "VALIDATE_APART_BYTES", 64 * 1024)
    row = b'{"prompt": "What is 2 + 2? Think it through step by step.", "answer": "4"}\n'
    count = files.VALIDATE_APART_BYTES // len(row) + 100
    apart: list[tuple[bool, int | str]] = []
    real = files._validate_apart

    def spy(path: str) -> tuple[bool, int | str]:
        apart.append(real(path))
        return apart[-1]

    monkeypatch.setattr(files, "_validate_apart", spy)
    good = http.post("/v1/files", data={"purpose": "fine-tune"},
                     files={"file": ("big.jsonl", row * count, "application/jsonl")})
    assert good.status_code == 200, good.text
    assert good.json()["status"] == "processed" and apart == [(True, count)]
    with transaction(sessions) as session:
        assert session.scalars(select(File.rows).where(File.id == good.json()["id"])).one() \
            == count
    bad = http.post("/v1/files", data={"purpose": "fine-tune"},
                    files={"file": ("bad.jsonl", row * count + b"not json\n",
                                    "application/jsonl")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_file"
    assert f"line {count + 1}: invalid JSON" in bad.json()["error"]["message"]
    assert len(apart) == 2 and apart[1][0] is False
    small = http.post("/v1/files", data={"purpose": "fine-tune"},
                      files={"file": ("small.jsonl", row, "application/jsonl")})
    assert small.status_code == 200 and len(apart) == 2  # small ones stay in the thread
    assert row_count(sessions, tenant[0]) == 2


def test_empty_file_is_an_invalid_file(http: httpx.Client, tenant: tuple[str, str],
                                       sessions: sessionmaker[Session]) -> None:
    r = upload(http, "empty.jsonl", b"\n\n")
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_file", "file")
    assert "no rows" in r.json()["error"]["message"]
    assert row_count(sessions, tenant[0]) == 0


def test_file_just_over_the_limit_is_413_and_nothing_is_stored(
        http: httpx.Client, service_settings: Settings, tenant: tuple[str, str],
        storage: LocalStorage, sessions: sessionmaker[Session]) -> None:
    # Over max_upload_bytes but under the Content-Length pre-check's slack: the service's
    # chunked read is what refuses it.
    line = jsonl(PROMPT_ROWS[:1])
    data = line * (service_settings.max_upload_bytes // len(line) + 10)
    assert service_settings.max_upload_bytes < len(data) < (service_settings.max_upload_bytes
                                                             + 32 * 1024)
    r = upload(http, "big.jsonl", data)
    assert r.status_code == 413
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("payload_too_large",
                                                                       "file")
    assert row_count(sessions, tenant[0]) == 0
    assert stored_names(storage, tenant[0]) == []


def test_chunked_upload_without_content_length_is_cut_off_at_the_limit(
        http: httpx.Client, service_settings: Settings, tenant: tuple[str, str],
        sessions: sessionmaker[Session]) -> None:
    boundary = "paecboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f'fine-tune\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.jsonl"\r\n\r\n').encode()
    chunk = jsonl(PROMPT_ROWS[:1]) * 2000
    n_chunks = (service_settings.max_upload_bytes + 128 * 1024) // len(chunk) + 1

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(n_chunks):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = http.post("/v1/files", content=body(),
                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    # Refused while the body arrived, not after spooling all of it for the service to read.
    assert r.json()["error"]["message"].startswith("request body is over the limit")
    assert row_count(sessions, tenant[0]) == 0


def test_purpose_other_than_fine_tune_is_400(openai_client: OpenAI, tmp_path: Path) -> None:
    with open(write(tmp_path, "train.jsonl", jsonl(PROMPT_ROWS)), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="assistants")
    assert caught.value.param == "purpose"


def test_filename_without_jsonl_extension_is_400(openai_client: OpenAI, tmp_path: Path,
                                                 tenant: tuple[str, str],
                                                 sessions: sessionmaker[Session]) -> None:
    with open(write(tmp_path, "train.csv", jsonl(PROMPT_ROWS)), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="fine-tune")
    assert caught.value.param == "file"
    assert "train.csv" in caught.value.message
    assert row_count(sessions, tenant[0]) == 0


def test_upload_without_a_file_field_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/files", data={"purpose": "fine-tune"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "file"


def test_upload_form_is_described_in_the_openapi_schema() -> None:
    app = FastAPI()
    app.include_router(files_routes.router)
    operation = app.openapi()["paths"]["/v1/files"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file", "purpose"]


def test_upload_without_a_key_is_401(server: str) -> None:
    r = httpx.post(server + "/v1/files", files={"file": ("t.jsonl", jsonl(PROMPT_ROWS))},
                   data={"purpose": "fine-tune"})
    assert r.status_code == 401


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



# ---- files used by evaluations (issue 15, item 10) ----

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


# ---- expiry (issue 15, item 11) ----

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


# ---- upload spools (issue 15, item 12) ----

_BLOCKED_UPLOAD = """
import sys, time
from pathlib import Path
from store import files

class Stalled:  # a client that sends a first chunk, then nothing
    sent = False
    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            return b'{"prompt": "What is 1 + 1?", "answer": "2"}\\n' * 1000
        time.sleep(3600)
        return b""

files.create_file(None, None, "org-x", filename="big.jsonl", purpose="fine-tune",
                  stream=Stalled(), max_bytes=10**9, spool_dir=Path(sys.argv[1]))
"""


def test_the_spool_of_a_killed_upload_is_removed_by_the_next_upload(
        http: httpx.Client, service_settings: Settings) -> None:
    spool_dir = service_settings.resolved_spool_dir
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_UPLOAD, str(spool_dir)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in spool_dir.glob("paec-upload-*.jsonl") if p.stat().st_size]:
            assert time.monotonic() < deadline and proc.poll() is None, "no spool appeared"
            time.sleep(0.1)
        (spool,) = spool_dir.glob("paec-upload-*.jsonl")
        assert spool.is_relative_to(service_settings.data_dir)  # not the system temp folder
        old = time.time() - 3600
        os.utime(spool, (old, old))
        assert files.remove_orphan_spools(spool_dir) == []  # in use: locked by its upload
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert spool.exists()  # what a SIGKILL leaves behind
    assert upload(http, "train.jsonl", jsonl(PROMPT_ROWS)).status_code == 200
    assert not spool.exists()
    assert list(spool_dir.iterdir()) == []  # the upload's own spool went too


def test_a_young_or_locked_spool_is_not_taken_for_an_orphan(tmp_path: Path) -> None:
    young = tmp_path / "paec-upload-young.jsonl"
    young.write_bytes(b"{}")
    locked = tmp_path / "paec-upload-locked.jsonl"
    locked.write_bytes(b"{}")
    old = time.time() - 3600
    os.utime(locked, (old, old))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert files.remove_orphan_spools(tmp_path) == []
    assert files.remove_orphan_spools(tmp_path) == [locked]
    assert young.exists() and not locked.exists()
