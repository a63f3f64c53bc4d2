"""store.checkpoints on a real Postgres built by the migrations: registration is idempotent
per (job, step), a lost archive is uploaded again, resume finds the newest full-state
checkpoint, and fetching verifies the archive's sha256 before unpacking it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import ids
from store.checkpoints import (
    CheckpointIntegrityError,
    checkpoint_model_name,
    fetch_checkpoint,
    fine_tuned_model_name,
    latest_full_state_checkpoint,
    prune_checkpoints,
    register_checkpoint,
)
from store.db import transaction
from store.model_names import ModelKind, resolve_model_name
from store.models import Checkpoint, CheckpointPermission, Job
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_job, migrated_sessions, new_tenant_key


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with migrated_sessions() as made:
        yield made


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "artifacts")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small stand-in for a trainer checkpoint folder."""
    root = tmp_path / "ckpt"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    return root


def new_job(sessions: sessionmaker[Session], **fields: object) -> Job:
    tenant_id, _ = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id, **fields)
    with sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        return job


def register(sessions: sessionmaker[Session], storage: LocalStorage, job: Job, step: int,
             folder: Path, *, full_state: bool = True,
             metrics: dict[str, object] | None = None) -> Checkpoint:
    with transaction(sessions) as session:
        return register_checkpoint(session, storage, job, step, folder,
                                   full_state=full_state, metrics=dict(metrics or {}))


def test_names_follow_openai_scheme_and_reach_the_checkpoint(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions, suffix="math")
    ckpt = register(sessions, storage, job, 3, folder)
    assert fine_tuned_model_name(job) == (
        f"ft:smollm2-135m-instruct:{job.tenant_id}:math:{job.id}")
    assert ckpt.model_name == fine_tuned_model_name(job) + ":ckpt-step-3"
    with sessions() as session:
        ref = resolve_model_name(session, Settings(), job.tenant_id, ckpt.model_name)
    assert (ref.kind, ref.source) == (ModelKind.CHECKPOINT, ckpt.id)


def test_a_long_local_base_model_still_gives_a_name_within_512_characters(
        sessions: sessionmaker[Session]) -> None:
    job = new_job(sessions, model="local:" + "/".join(["d" * 60] * 8), suffix="s" * 64)
    name = checkpoint_model_name(job, 10**9)
    assert len(name) <= 512
    assert name.endswith(f":{job.id}:ckpt-step-1000000000")


def test_a_replayed_step_returns_the_same_row_and_writes_nothing(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions)
    first = register(sessions, storage, job, 2, folder, metrics={"reward/mean": 0.5})
    archive = storage.path(first.storage_key)
    written = archive.stat().st_mtime_ns
    (folder / "config.json").write_text('{"changed": true}')  # a replay must not re-archive
    again = register(sessions, storage, job, 2, folder, metrics={"reward/mean": 0.9})
    assert (again.id, again.sha256, again.metrics) == (first.id, first.sha256,
                                                       {"reward/mean": 0.5})
    assert archive.stat().st_mtime_ns == written
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Checkpoint)
                              .where(Checkpoint.job_id == job.id)) == 1


def test_a_row_whose_archive_is_missing_gets_the_archive_again(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions)
    first = register(sessions, storage, job, 1, folder)
    storage.delete(first.storage_key)
    again = register(sessions, storage, job, 1, folder)
    assert again.id == first.id
    assert storage.exists(again.storage_key)
    assert storage.size(again.storage_key) == again.size


def test_two_writers_of_one_step_keep_the_winner_s_bytes_and_nothing_of_the_loser(
        sessions: sessionmaker[Session], tmp_path: Path, folder: Path) -> None:
    # A stale worker and its successor both save step 4: while the stale one uploads, the
    # successor registers the step with different bytes. The row must keep the successor's
    # archive and sha256, and the loser's upload must not overwrite it or linger.
    job = new_job(sessions)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llama", "other": true}')
    storage = LocalStorage(tmp_path / "race")
    winner: list[Checkpoint] = []

    class RacingStorage(LocalStorage):
        def put_file(self, key: str, source: Path) -> None:
            if not winner:
                winner.append(register(sessions, storage, job, 4, other))
            super().put_file(key, source)

    loser = register(sessions, RacingStorage(tmp_path / "race"), job, 4, folder)
    assert loser.id == winner[0].id and loser.sha256 == winner[0].sha256
    archives = list((tmp_path / "race" / "checkpoints").rglob("*.tar"))
    assert [a.name for a in archives] == [Path(winner[0].storage_key).name]
    fetched = fetch_checkpoint(storage, loser, tmp_path / "fetched")  # sha256 verified
    assert (Path(fetched) / "config.json").read_text() == (other / "config.json").read_text()


def test_non_finite_metrics_are_dropped_so_the_row_is_valid_json(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions)
    ckpt = register(sessions, storage, job, 1, folder,
                    metrics={"loss": math.nan, "entropy": 1.25, "reward/max": math.inf})
    with sessions() as session:
        row = session.get(Checkpoint, ckpt.seq)
        assert row is not None and row.metrics == {"entropy": 1.25}


def test_resume_uses_the_newest_full_state_checkpoint(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions)
    register(sessions, storage, job, 2, folder, full_state=True)
    register(sessions, storage, job, 4, folder, full_state=True)
    register(sessions, storage, job, 6, folder, full_state=False)
    with sessions() as session:
        latest = latest_full_state_checkpoint(session, job.id)
        assert latest is not None and latest.step == 4
        assert latest_full_state_checkpoint(session, new_job(sessions).id) is None


def test_fetch_unpacks_the_original_files(sessions: sessionmaker[Session],
                                          storage: LocalStorage, folder: Path,
                                          tmp_path: Path) -> None:
    job = new_job(sessions)
    ckpt = register(sessions, storage, job, 1, folder)
    out = fetch_checkpoint(storage, ckpt, tmp_path / "fetched")
    originals = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == originals
    for rel in originals:
        assert (out / rel).read_bytes() == (folder / rel).read_bytes()


def test_fetch_refuses_an_altered_archive(sessions: sessionmaker[Session],
                                          storage: LocalStorage, folder: Path,
                                          tmp_path: Path) -> None:
    job = new_job(sessions)
    ckpt = register(sessions, storage, job, 1, folder)
    archive = storage.path(ckpt.storage_key)
    data = bytearray(archive.read_bytes())
    data[700] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="does not match"):
        fetch_checkpoint(storage, ckpt, tmp_path / "fetched")
    assert not (tmp_path / "fetched" / "config.json").exists()


def test_fetch_says_when_the_archive_is_missing(sessions: sessionmaker[Session],
                                               storage: LocalStorage, folder: Path,
                                               tmp_path: Path) -> None:
    job = new_job(sessions)
    ckpt = register(sessions, storage, job, 1, folder)
    storage.delete(ckpt.storage_key)
    with pytest.raises(CheckpointIntegrityError, match="missing from storage"):
        fetch_checkpoint(storage, ckpt, tmp_path / "fetched")


def test_retention_keeps_the_newest_the_final_the_shared_and_the_used_checkpoints(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    """With keep = 2, pruning after each save deletes the rows and
    archives of the older full-state checkpoints, except the final one (the job's last
    step), one shared with another tenant and one a queued job trains from."""
    job = new_job(sessions, total_steps=10, status="running")
    keys: dict[int, str] = {}
    deleted: list[str] = []
    for step in (1, 2, 3, 10, 11, 12):
        with transaction(sessions) as session:
            row = register_checkpoint(session, storage, job, step, folder, full_state=True,
                                      metrics={})
            keys[step] = row.storage_key
            if step == 2:  # shared with another tenant
                other, _ = new_tenant_key(sessions)
                session.add(CheckpointPermission(id=ids.new_id(ids.CHECKPOINT_PERMISSION),
                                                 checkpoint_id=row.id, project_id=other))
            if step == 3:  # the base model of another job, not yet finished
                make_job(sessions, job.tenant_id, model=row.model_name)
        with transaction(sessions) as session:
            pruned = prune_checkpoints(session, job, keep=2)
        for key in pruned:
            storage.delete(key)
        deleted += pruned
    assert deleted == [keys[1]]  # 2 shared, 3 used, 10 final, 11 and 12 the newest two
    assert not storage.exists(keys[1])
    assert all(storage.exists(keys[s]) for s in (2, 3, 10, 11, 12))
    with sessions() as session:
        steps = list(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job.id)
                                     .order_by(Checkpoint.step)))
    assert steps == [2, 3, 10, 11, 12]


def test_retention_keeps_checkpoints_that_are_not_full_state(
        sessions: sessionmaker[Session], storage: LocalStorage, folder: Path) -> None:
    job = new_job(sessions, total_steps=10, status="running")
    with transaction(sessions) as session:
        exported = register_checkpoint(session, storage, job, 1, folder, full_state=False,
                                       metrics={})
        for step in (2, 3):
            register_checkpoint(session, storage, job, step, folder, full_state=True,
                                metrics={})
        assert prune_checkpoints(session, job, keep=1) != []
    with sessions() as session:
        steps = list(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job.id)
                                     .order_by(Checkpoint.step)))
    assert steps == [1, 3] and storage.exists(exported.storage_key)
