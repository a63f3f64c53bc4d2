"""Checkpoints over real HTTP: OpenAI's list (through the official client), the native
object with both archives' sizes and sha256s, and the download of either archive (the
model-only one by default, `contents=full` for the training state too) with ranges,
conditional requests and HEAD; another tenant sees none of it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.checkpoints import register_checkpoint
from store.db import transaction
from store.models import Checkpoint, Job
from store.storage import LocalStorage
from tests.service import make_job, new_tenant_key

BIG = 3 * 1024 * 1024 + 12345
"""Size of the weights file: several storage chunks, so ranges cross chunk boundaries."""
OPTIMISER = 2 * BIG
"""Size of the training state (AdamW keeps two moments per weight)."""
MODEL_FILES = ["checkpoint.json", "config.json", "model.safetensors", "tokenizer.json"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder as the trainer writes it: weights of a few MB, config, tokenizer,
    training state and the sidecar listing them."""
    root = tmp_path_factory.mktemp("ckpt")
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(BIG),
             "tokenizer.json": b'{"version": "1.0"}', "training_state.pt": os.urandom(OPTIMISER)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "checkpoint.json").write_text(json.dumps({"format": 1, "step": 7, "files": {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for name, data in files.items()}}))
    return root


def arrange(sessions: sessionmaker[Session], storage: LocalStorage, tenant_id: str,
            folder: Path, steps: list[int]) -> tuple[str, list[Checkpoint]]:
    """A job of `tenant_id` with a checkpoint at each step, registered in that order."""
    job_id = make_job(sessions, tenant_id, status="running")
    made = []
    for step in steps:
        with transaction(sessions) as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            assert job is not None
            made.append(register_checkpoint(session, storage, job, step, folder,
                                             full_state=step % 2 == 0,
                                             metrics={"reward/mean": step / 10,
                                                      "entropy": 1.5, "note": "text"}))
    return job_id, made


@pytest.fixture
def checkpoint(sessions: sessionmaker[Session], storage: LocalStorage,
               tenant: tuple[str, str], folder: Path) -> Checkpoint:
    """One checkpoint of the fresh tenant."""
    return arrange(sessions, storage, tenant[0], folder, [7])[1][0]


@pytest.fixture(params=["model", "full"])
def contents(request: pytest.FixtureRequest) -> str:
    """Which archive a test downloads."""
    return str(request.param)


def archive_key(checkpoint: Checkpoint, contents: str) -> str:
    key = checkpoint.storage_key if contents == "full" else checkpoint.model_storage_key
    assert key is not None
    return key


@pytest.fixture
def archive(storage: LocalStorage, checkpoint: Checkpoint, contents: str) -> bytes:
    """The archive `contents` names, read straight from storage."""
    return storage.path(archive_key(checkpoint, contents)).read_bytes()


@pytest.fixture
def stranger(server: str, sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    """An HTTP client of another tenant."""
    _, key = new_tenant_key(sessions)
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client


def download(http: httpx.Client, checkpoint: Checkpoint, contents: str | None = None,
             **headers: str) -> httpx.Response:
    params = {} if contents is None else {"contents": contents}
    return http.get(f"/api/checkpoints/{checkpoint.id}/download", params=params,
                    headers=headers)


def etag(archive: bytes) -> str:
    return f'"{hashlib.sha256(archive).hexdigest()}"'


def test_the_official_client_pages_through_checkpoints_newest_first(
        openai_client: OpenAI, sessions: sessionmaker[Session], storage: LocalStorage,
        tenant: tuple[str, str], folder: Path) -> None:
    job_id, made = arrange(sessions, storage, tenant[0], folder, [1, 2, 3, 4, 5])
    first = openai_client.fine_tuning.jobs.checkpoints.list(job_id, limit=2)
    pages = list(first.iter_pages())  # the first page, then each next one
    assert [[c.step_number for c in page.data] for page in pages] == [[5, 4], [3, 2], [1]]
    assert [page.has_more for page in pages] == [True, True, False]
    extra = first.model_extra or {}
    assert (extra["first_id"], extra["last_id"]) == (made[4].id, made[3].id)
    newest = first.data[0]
    assert newest.object == "fine_tuning.job.checkpoint"
    assert newest.fine_tuning_job_id == job_id
    assert newest.fine_tuned_model_checkpoint.endswith(f":{job_id}:ckpt-step-5")
    assert newest.metrics.step == 5
    assert newest.model_extra is not None
    assert newest.model_extra["sha256"] == made[4].sha256
    assert newest.model_extra["model_sha256"] == made[4].model_sha256
    assert newest.model_extra["download_url"] == f"/api/checkpoints/{made[4].id}/download"


def test_the_list_carries_numeric_metrics_and_the_archive_facts(
        http: httpx.Client, sessions: sessionmaker[Session], storage: LocalStorage,
        tenant: tuple[str, str], folder: Path) -> None:
    job_id, made = arrange(sessions, storage, tenant[0], folder, [4])
    body = http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()
    assert body["object"] == "list" and body["has_more"] is False
    item = body["data"][0]
    assert item["metrics"] == {"step": 4, "reward/mean": 0.4, "entropy": 1.5}
    assert (item["bytes"], item["full_state"]) == (made[0].size, True)
    assert (item["model_bytes"], item["model_sha256"]) == (made[0].model_size,
                                                           made[0].model_sha256)
    assert http.get(f"/api/checkpoints/{made[0].id}").json() == item


def test_an_empty_list_has_null_first_and_last_ids(http: httpx.Client,
                                                  sessions: sessionmaker[Session],
                                                  tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0])
    body = http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()
    assert body == {"object": "list", "data": [], "first_id": None, "last_id": None,
                    "has_more": False}


def test_an_after_that_is_not_a_checkpoint_of_the_job_is_400(
        http: httpx.Client, sessions: sessionmaker[Session], tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0])
    r = http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params={"after": "ftckpt_x"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "after"


def test_download_serves_the_model_only_archive_by_default(
        http: httpx.Client, checkpoint: Checkpoint, folder: Path) -> None:
    r = download(http, checkpoint)
    assert r.status_code == 200
    assert r.content == download(http, checkpoint, "model").content
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="{checkpoint.job_id}-step-7-model.tar"')
    assert r.headers["x-checkpoint-contents"] == "model"
    assert int(r.headers["content-length"]) == len(r.content) == checkpoint.model_size
    assert r.headers["accept-ranges"] == "bytes"
    digest = hashlib.sha256(r.content).hexdigest()
    assert r.headers["x-checkpoint-sha256"] == digest == checkpoint.model_sha256
    assert r.headers["etag"] == f'"{digest}"'
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert sorted(tar.getnames()) == MODEL_FILES  # no training_state.pt
        for name in MODEL_FILES[1:]:
            member = tar.extractfile(name)
            assert member is not None and member.read() == (folder / name).read_bytes()
        sidecar = tar.extractfile("checkpoint.json")
        assert sidecar is not None
        listed = json.loads(sidecar.read())["files"]
    assert sorted(listed) == MODEL_FILES[1:]


def test_contents_full_serves_the_archive_a_job_resumes_from(
        http: httpx.Client, checkpoint: Checkpoint, folder: Path) -> None:
    r = download(http, checkpoint, "full")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == (
        f'attachment; filename="{checkpoint.job_id}-step-7-full.tar"')
    assert r.headers["x-checkpoint-contents"] == "full"
    assert int(r.headers["content-length"]) == len(r.content) == checkpoint.size
    assert r.headers["x-checkpoint-sha256"] == hashlib.sha256(r.content).hexdigest() == (
        checkpoint.sha256)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = sorted(tar.getnames())
        assert names == sorted([*MODEL_FILES, "training_state.pt"])
        for name in names:
            member = tar.extractfile(name)
            assert member is not None and member.read() == (folder / name).read_bytes()


def test_the_model_archive_is_smaller_than_the_full_one_by_the_training_state(
        http: httpx.Client, checkpoint: Checkpoint) -> None:
    sizes = {contents: int(http.head(f"/api/checkpoints/{checkpoint.id}/download",
                                     params={"contents": contents}).headers["content-length"])
             for contents in ("model", "full")}
    described = http.get(f"/api/checkpoints/{checkpoint.id}").json()
    assert (described["model_bytes"], described["bytes"]) == (sizes["model"], sizes["full"])
    # Give or take the tar's padding to 10 KiB records and the two sidecars.
    assert abs(sizes["full"] - sizes["model"] - OPTIMISER) <= 2 * tarfile.RECORDSIZE
    assert sizes["model"] < sizes["full"] / 2


@pytest.mark.parametrize("value", ["weights", "", "MODEL", "model,full"])
def test_an_unknown_contents_is_400_naming_it(http: httpx.Client, checkpoint: Checkpoint,
                                              value: str) -> None:
    r = download(http, checkpoint, value)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["type"]) == ("contents", "invalid_request_error")
    head = http.head(f"/api/checkpoints/{checkpoint.id}/download", params={"contents": value})
    assert head.status_code == 400


def test_a_checkpoint_from_before_model_archives_serves_full_and_says_so_for_model(
        http: httpx.Client, sessions: sessionmaker[Session], checkpoint: Checkpoint,
        storage: LocalStorage) -> None:
    storage.delete(archive_key(checkpoint, "model"))
    with transaction(sessions) as session:  # as migration 0004 leaves an older row
        row = session.get(Checkpoint, checkpoint.seq)
        assert row is not None
        row.model_storage_key = row.model_size = row.model_sha256 = None
    described = http.get(f"/api/checkpoints/{checkpoint.id}").json()
    assert (described["model_bytes"], described["model_sha256"]) == (None, None)
    r = download(http, checkpoint)
    assert r.status_code == 404
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("model_archive_unavailable", "contents")
    assert "contents=full" in error["message"]
    full = download(http, checkpoint, "full")
    assert (full.status_code, hashlib.sha256(full.content).hexdigest()) == (200,
                                                                            checkpoint.sha256)


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=0-99", 0, 99),
    ("bytes=1048000-2097999", 1048000, 2097999),
    ("bytes=-500", None, None),
    ("bytes=3000000-", 3000000, None),
], ids=["start", "middle", "suffix", "open-ended"])
def test_a_range_answers_206_with_exactly_those_bytes(
        http: httpx.Client, checkpoint: Checkpoint, contents: str, archive: bytes, spec: str,
        first: int | None, last: int | None) -> None:
    size = len(archive)
    lo = size - 500 if first is None else first
    hi = size - 1 if last is None else last
    r = download(http, checkpoint, contents, Range=spec)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {lo}-{hi}/{size}"
    assert int(r.headers["content-length"]) == hi - lo + 1
    assert r.content == archive[lo:hi + 1]
    assert r.headers["etag"] == etag(archive)


def test_a_range_past_the_end_is_416_with_the_size(http: httpx.Client, checkpoint: Checkpoint,
                                                   contents: str, archive: bytes) -> None:
    r = download(http, checkpoint, contents, Range=f"bytes={len(archive)}-")
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(archive)}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"


def test_several_ranges_get_the_whole_archive(http: httpx.Client, checkpoint: Checkpoint,
                                              contents: str, archive: bytes) -> None:
    r = download(http, checkpoint, contents, Range="bytes=0-9,20-29")
    assert (r.status_code, r.content) == (200, archive)


def test_a_matching_if_none_match_is_304_without_a_body(
        http: httpx.Client, checkpoint: Checkpoint, contents: str, archive: bytes) -> None:
    r = download(http, checkpoint, contents, **{"If-None-Match": etag(archive)})
    assert (r.status_code, r.content) == (304, b"")
    assert r.headers["etag"] == etag(archive)
    # The other archive's tag is another representation: its bytes come.
    other = "full" if contents == "model" else "model"
    r = download(http, checkpoint, other, **{"If-None-Match": etag(archive)})
    assert r.status_code == 200 and r.content != archive


def test_if_range_with_another_etag_sends_the_whole_archive(
        http: httpx.Client, checkpoint: Checkpoint, contents: str, archive: bytes) -> None:
    stale = download(http, checkpoint, contents, Range="bytes=0-9", **{"If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, archive)
    fresh = download(http, checkpoint, contents, Range="bytes=0-9",
                     **{"If-Range": etag(archive)})
    assert (fresh.status_code, fresh.content) == (206, archive[:10])


def test_head_sends_the_headers_without_the_bytes(http: httpx.Client, checkpoint: Checkpoint,
                                                  contents: str, archive: bytes) -> None:
    path = f"/api/checkpoints/{checkpoint.id}/download"
    r = http.head(path, params={"contents": contents})
    size = len(archive)
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == size
    assert r.headers["x-checkpoint-sha256"] == hashlib.sha256(archive).hexdigest()
    ranged = http.head(path, params={"contents": contents}, headers={"Range": "bytes=-10"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"


def test_another_tenant_gets_404_for_the_list_the_object_and_the_download(
        stranger: httpx.Client, checkpoint: Checkpoint) -> None:
    paths = [f"/v1/fine_tuning/jobs/{checkpoint.job_id}/checkpoints",
             f"/api/checkpoints/{checkpoint.id}", f"/api/checkpoints/{checkpoint.id}/download",
             f"/api/checkpoints/{checkpoint.id}/download?contents=full"]
    for path in paths:
        r = stranger.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    assert stranger.head(paths[2]).status_code == 404
