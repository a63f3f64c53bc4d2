"""store.checkpoints on a real Postgres built by the migrations: a checkpoint is stored as a
full-state archive and a model-only one (no training state, its own sidecar, real mtimes),
registration is idempotent per (job, step), a lost archive is uploaded again, resume finds
the newest full-state checkpoint, fetching verifies the archive's sha256 before unpacking
it, pruning deletes both archives, and a row from before model-only archives still works."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import ids
from store.checkpoints import (
    ArchiveContents,
    CheckpointIntegrityError,
    ModelArchiveMissingError,
    archive_keys,
    checkpoint_archive,
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


MTIME = 1_767_323_096
"""When the trainer wrote the files of `trainer_folder` (2026-01-02): archives keep it."""
WEIGHTS = 64 * 1024
OPTIMISER = 3 * WEIGHTS
"""The training state is the bulk of a full checkpoint (AdamW: two moments per weight)."""


def write_trainer_checkpoint(root: Path, files: dict[str, bytes], step: int) -> Path:
    """A folder in the trainer's checkpoint format: `files` and a sidecar listing them with
    their sha256s (paec.training.checkpoint), all dated MTIME."""
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    listed = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
              for name, data in sorted(files.items())}
    (root / "checkpoint.json").write_text(json.dumps(
        {"format": 1, "step": step, "metrics": {"reward/mean": 0.25}, "files": listed}))
    for item in root.iterdir():
        os.utime(item, (MTIME, MTIME))
    return root


@pytest.fixture
def trainer_folder(tmp_path: Path) -> Path:
    """A full-weight checkpoint as the trainer writes it: model, configs, tokenizer, training
    state, sidecar."""
    return write_trainer_checkpoint(tmp_path / "checkpoint-000005", {
        "config.json": b'{"model_type": "llama"}',
        "generation_config.json": b'{"pad_token_id": 2}',
        "model.safetensors": os.urandom(WEIGHTS), "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}", "training_state.pt": os.urandom(OPTIMISER)}, 5)


def members(storage: LocalStorage, key: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """An archive's members by name: (header, bytes)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(storage.path(key).read_bytes())) as tar:
        for info in tar.getmembers():
            reader = tar.extractfile(info)
            assert reader is not None
            out[info.name] = (info, reader.read())
    return out


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
    assert sorted(a.name for a in archives) == sorted(Path(k).name
                                                      for k in archive_keys(winner[0]))
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
    keys: dict[int, list[str]] = {}
    deleted: list[str] = []
    for step in (1, 2, 3, 10, 11, 12):
        with transaction(sessions) as session:
            row = register_checkpoint(session, storage, job, step, folder, full_state=True,
                                      metrics={})
            keys[step] = archive_keys(row)
            assert len(keys[step]) == 2  # the full-state archive and the model-only one
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
    assert deleted == keys[1]  # 2 shared, 3 used, 10 final, 11 and 12 the newest two
    assert not any(storage.exists(key) for key in keys[1])
    assert all(storage.exists(key) for s in (2, 3, 10, 11, 12) for key in keys[s])
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


def test_a_checkpoint_is_stored_as_a_full_state_archive_and_a_model_only_one(
        sessions: sessionmaker[Session], storage: LocalStorage, trainer_folder: Path,
        tmp_path: Path) -> None:
    ckpt = register(sessions, storage, new_job(sessions), 5, trainer_folder)
    originals = {p.name: p.read_bytes() for p in trainer_folder.iterdir()}
    full = members(storage, ckpt.storage_key)
    assert {name: data for name, (_, data) in full.items()} == originals
    assert ckpt.model_storage_key is not None
    model = members(storage, ckpt.model_storage_key)
    assert sorted(model) == sorted(set(originals) - {"training_state.pt"})
    assert all(model[name][1] == originals[name] for name in model if name != "checkpoint.json")
    sidecar = json.loads(model["checkpoint.json"][1])
    assert (sidecar["contents"], sidecar["step"], sidecar["metrics"]) == (
        "model", 5, {"reward/mean": 0.25})
    assert sidecar["files"] == {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for name, (_, data) in model.items() if name != "checkpoint.json"}
    for archive in (checkpoint_archive(ckpt, ArchiveContents.FULL),
                    checkpoint_archive(ckpt, ArchiveContents.MODEL)):
        data = storage.path(archive.key).read_bytes()
        assert (archive.size, archive.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (checkpoint_archive(ckpt, ArchiveContents.MODEL).key, ckpt.model_size) == (
        ckpt.model_storage_key, storage.size(ckpt.model_storage_key))
    # The difference is the training state, give or take the tar's padding to 10 KiB
    # records, a header and the sidecars.
    assert abs((ckpt.size - (ckpt.model_size or 0)) - OPTIMISER) <= 2 * tarfile.RECORDSIZE
    # Resume still unpacks the full state.
    fetched = fetch_checkpoint(storage, ckpt, tmp_path / "resume")
    assert (fetched / "training_state.pt").read_bytes() == originals["training_state.pt"]


def test_archive_members_carry_the_files_mtimes_not_1970(
        sessions: sessionmaker[Session], storage: LocalStorage, trainer_folder: Path,
        tmp_path: Path) -> None:
    before = int(time.time())
    ckpt = register(sessions, storage, new_job(sessions), 5, trainer_folder)
    after = time.time()
    assert ckpt.model_storage_key is not None
    full, model = members(storage, ckpt.storage_key), members(storage, ckpt.model_storage_key)
    assert {name: int(info.mtime) for name, (info, _) in full.items()} == dict.fromkeys(
        full, MTIME)
    sidecar_time = model.pop("checkpoint.json")[0].mtime  # written at registration
    assert before <= sidecar_time <= after
    assert {int(info.mtime) for info, _ in model.values()} == {MTIME}
    assert all((info.uid, info.uname) == (0, "") for info, _ in full.values())
    fetched = fetch_checkpoint(storage, ckpt, tmp_path / "fetched")
    assert int((fetched / "training_state.pt").stat().st_mtime) == MTIME


def test_a_lora_checkpoint_s_model_archive_holds_the_merged_model_it_is_given(
        sessions: sessionmaker[Session], storage: LocalStorage, tmp_path: Path) -> None:
    adapter = write_trainer_checkpoint(tmp_path / "lora", {
        "adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": os.urandom(1000),
        "tokenizer.json": b"{}", "training_state.pt": os.urandom(2000)}, 3)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text('{"model_type": "llama"}')
    (merged / "model.safetensors").write_bytes(os.urandom(WEIGHTS))
    (merged / "tokenizer.json").write_text("{}")
    job = new_job(sessions)
    # An adapter alone is not a model plain transformers loads: the merge is required.
    with pytest.raises(ValueError, match="LoRA adapter"):
        register(sessions, storage, job, 3, adapter)
    assert not storage.path("checkpoints").exists()
    with transaction(sessions) as session:
        ckpt = register_checkpoint(session, storage, job, 3, adapter, full_state=True,
                                   metrics={}, model_folder=merged)
    assert "adapter_model.safetensors" in members(storage, ckpt.storage_key)
    assert ckpt.model_storage_key is not None
    model = members(storage, ckpt.model_storage_key)
    assert sorted(model) == ["checkpoint.json", "config.json", "model.safetensors",
                             "tokenizer.json"]
    assert model["model.safetensors"][1] == (merged / "model.safetensors").read_bytes()
    sidecar = json.loads(model["checkpoint.json"][1])
    assert sidecar["step"] == 3 and sorted(sidecar["files"]) == [
        "config.json", "model.safetensors", "tokenizer.json"]


def test_a_missing_model_archive_is_uploaded_again_and_the_full_one_kept(
        sessions: sessionmaker[Session], storage: LocalStorage, trainer_folder: Path) -> None:
    job = new_job(sessions)
    first = register(sessions, storage, job, 5, trainer_folder)
    full_key, model_key = first.storage_key, first.model_storage_key
    assert model_key is not None
    storage.delete(model_key)
    again = register(sessions, storage, job, 5, trainer_folder)
    assert (again.id, again.storage_key, again.sha256) == (first.id, full_key, first.sha256)
    assert again.model_storage_key not in (None, model_key)
    assert storage.size(str(again.model_storage_key)) == again.model_size


def test_a_row_from_before_model_archives_serves_its_full_archive_and_says_so_for_the_model(
        sessions: sessionmaker[Session], storage: LocalStorage, trainer_folder: Path,
        tmp_path: Path) -> None:
    job = new_job(sessions)
    ckpt = register(sessions, storage, job, 5, trainer_folder)
    storage.delete(str(ckpt.model_storage_key))
    with transaction(sessions) as session:  # as migration 0004 leaves an older row
        row = session.get(Checkpoint, ckpt.seq)
        assert row is not None
        row.model_storage_key = row.model_size = row.model_sha256 = None
    with sessions() as session:
        old = session.get(Checkpoint, ckpt.seq)
        assert old is not None
    assert archive_keys(old) == [ckpt.storage_key]
    assert checkpoint_archive(old, ArchiveContents.FULL).key == ckpt.storage_key
    with pytest.raises(ModelArchiveMissingError, match="contents=full") as raised:
        checkpoint_archive(old, ArchiveContents.MODEL)
    assert (raised.value.status_code, raised.value.param) == (404, "contents")
    assert (fetch_checkpoint(storage, old, tmp_path / "resume") / "training_state.pt").is_file()
    # A replay of its step (a resumed job saves it again) adds the model archive.
    again = register(sessions, storage, job, 5, trainer_folder)
    assert (again.storage_key, again.sha256) == (ckpt.storage_key, ckpt.sha256)
    assert again.model_storage_key is not None and storage.exists(again.model_storage_key)
