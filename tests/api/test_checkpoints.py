"""Checkpoints over real HTTP: OpenAI's list (through the official client), the native
object, and the archive download with ranges, conditional requests and HEAD; another
tenant sees none of it."""

from __future__ import annotations

import hashlib
import io
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
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_job, new_tenant_key

BIG = 3 * 1024 * 1024 + 12345
"""Size of the weights file: several storage chunks, so ranges cross chunk boundaries."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder of a few files, one of a few MB."""
    root = tmp_path_factory.mktemp("ckpt")
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(os.urandom(BIG))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    return root


@pytest.fixture
def storage(service_settings: Settings) -> LocalStorage:
    """The artifact storage of the API under test."""
    return LocalStorage(service_settings.resolved_artifacts_dir)


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


@pytest.fixture
def archive(storage: LocalStorage, checkpoint: Checkpoint) -> bytes:
    """The checkpoint's archive, read straight from storage."""
    return storage.path(checkpoint.storage_key).read_bytes()


@pytest.fixture
def stranger(server: str, sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    """An HTTP client of another tenant."""
    _, key = new_tenant_key(sessions)
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client


def download(http: httpx.Client, checkpoint: Checkpoint, **headers: str) -> httpx.Response:
    return http.get(f"/api/checkpoints/{checkpoint.id}/download", headers=headers)


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


def test_download_streams_the_archive_that_extracts_to_the_original_files(
        http: httpx.Client, checkpoint: Checkpoint, folder: Path) -> None:
    r = download(http, checkpoint)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="{checkpoint.job_id}-step-7.tar"')
    assert int(r.headers["content-length"]) == len(r.content) == checkpoint.size
    assert r.headers["accept-ranges"] == "bytes"
    digest = hashlib.sha256(r.content).hexdigest()
    assert r.headers["x-checkpoint-sha256"] == digest == checkpoint.sha256
    assert r.headers["etag"] == f'"{digest}"'
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = sorted(tar.getnames())
        assert names == ["config.json", "model.safetensors", "tokenizer.json"]
        for name in names:
            member = tar.extractfile(name)
            assert member is not None and member.read() == (folder / name).read_bytes()


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=0-99", 0, 99),
    ("bytes=1048000-2097999", 1048000, 2097999),
    ("bytes=-500", None, None),
    ("bytes=3000000-", 3000000, None),
], ids=["start", "middle", "suffix", "open-ended"])
def test_a_range_answers_206_with_exactly_those_bytes(
        http: httpx.Client, checkpoint: Checkpoint, archive: bytes, spec: str,
        first: int | None, last: int | None) -> None:
    size = len(archive)
    lo = size - 500 if first is None else first
    hi = size - 1 if last is None else last
    r = download(http, checkpoint, Range=spec)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {lo}-{hi}/{size}"
    assert int(r.headers["content-length"]) == hi - lo + 1
    assert r.content == archive[lo:hi + 1]


def test_a_range_past_the_end_is_416_with_the_size(http: httpx.Client,
                                                   checkpoint: Checkpoint) -> None:
    r = download(http, checkpoint, Range=f"bytes={checkpoint.size}-")
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{checkpoint.size}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"


def test_several_ranges_get_the_whole_archive(http: httpx.Client, checkpoint: Checkpoint,
                                              archive: bytes) -> None:
    r = download(http, checkpoint, Range="bytes=0-9,20-29")
    assert (r.status_code, r.content) == (200, archive)


def test_a_matching_if_none_match_is_304_without_a_body(http: httpx.Client,
                                                        checkpoint: Checkpoint) -> None:
    r = download(http, checkpoint, **{"If-None-Match": f'"{checkpoint.sha256}"'})
    assert (r.status_code, r.content) == (304, b"")
    assert r.headers["etag"] == f'"{checkpoint.sha256}"'


def test_if_range_with_another_etag_sends_the_whole_archive(
        http: httpx.Client, checkpoint: Checkpoint, archive: bytes) -> None:
    stale = download(http, checkpoint, Range="bytes=0-9", **{"If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, archive)
    fresh = download(http, checkpoint, Range="bytes=0-9",
                     **{"If-Range": f'"{checkpoint.sha256}"'})
    assert (fresh.status_code, fresh.content) == (206, archive[:10])


def test_head_sends_the_headers_without_the_bytes(http: httpx.Client,
                                                  checkpoint: Checkpoint) -> None:
    r = http.head(f"/api/checkpoints/{checkpoint.id}/download")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == checkpoint.size
    assert r.headers["x-checkpoint-sha256"] == checkpoint.sha256
    ranged = http.head(f"/api/checkpoints/{checkpoint.id}/download",
                       headers={"Range": "bytes=-10"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == (
        f"bytes {checkpoint.size - 10}-{checkpoint.size - 1}/{checkpoint.size}")


def test_another_tenant_gets_404_for_the_list_the_object_and_the_download(
        stranger: httpx.Client, checkpoint: Checkpoint) -> None:
    paths = [f"/v1/fine_tuning/jobs/{checkpoint.job_id}/checkpoints",
             f"/api/checkpoints/{checkpoint.id}", f"/api/checkpoints/{checkpoint.id}/download"]
    for path in paths:
        r = stranger.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    assert stranger.head(paths[2]).status_code == 404
