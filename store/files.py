"""Files: uploaded datasets and the result files the worker writes (OpenAI `files.*`).

A dataset is validated in full (`paec.data.validate_jsonl_bytes`) before anything is stored, so
a bad upload leaves neither a row nor bytes behind and its error lists every bad row with its
line and field (docs/openai.md 3.7: validate at upload, not when the job fails). The bytes live
in artifact storage under `files/<tenant_id>/<file_id><ext>`; the row holds their size,
sha256 and row count. Another tenant's file is a NotFoundError, exactly like a missing one.

A file whose `expires_after` has passed is gone for its tenant: not listed, not retrievable
or downloadable (404 like a missing one), not usable by new jobs or evaluations; the sweeper
deletes its row and bytes (`purge_expired_files`) once no unfinished job or evaluation uses
it, and until then the worker still reads it for those.

An upload is spooled under `<data_dir>/uploads` (never the system temp folder) while it is
validated, and holds an exclusive lock on its spool; a spool nobody locks was left by a killed
process and is removed by the next upload (`remove_orphan_spools`).

Service functions take a Session and do not commit. Bytes are written before the row is
flushed and deleted again if the flush fails; the caller deletes them if its commit fails
(`create_file`), and deletes a deleted file's bytes only after its commit (`delete_file`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any, BinaryIO

from sqlalchemy import ColumnElement, Select, false, or_, select
from sqlalchemy.orm import Session

from paec.data import validate_jsonl_file
from paec.errors import DatasetError
from store import ids
from store.db import unix, utcnow
from store.errors import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from store.models import Evaluation, File, Job
from store.states import TERMINAL
from store.storage import CHUNK, ArtifactStorage

FINE_TUNE = "fine-tune"
"""The one purpose accepted for uploads: datasets of fine-tuning jobs."""
RESULTS = "fine-tune-results"
"""The purpose of files the worker writes (a finished job's metrics CSV)."""
EXPIRES_MIN_S = 3600
EXPIRES_MAX_S = 2_592_000
"""`expires_after.seconds` bounds, as OpenAI documents them (one hour to 30 days)."""
MAX_LIST = 10_000
"""Largest (and default) `limit` of a file list, as OpenAI's."""
MAX_FILENAME = 255
VALIDATE_APART_BYTES = 4 * 1024 * 1024
"""Uploads at least this large are validated in a child process (`_validate_apart`)."""
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_PLAUSIBLE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
SPOOL_PREFIX = "paec-upload-"
ORPHAN_SPOOL_AGE_S = 60.0
"""A spool younger than this is never taken for an orphan: its upload may not have locked
it yet."""
_ACTIVE_EVALUATIONS = ("queued", "running")
"""store.evaluations.ACTIVE (that module imports this one)."""


def live_file(now: datetime | None = None) -> ColumnElement[bool]:
    """The condition of a file that has not expired (`expires_at` unset or in the future)."""
    return or_(File.expires_at.is_(None), File.expires_at > (now or utcnow()))


def file_object(file: File) -> dict[str, Any]:
    """The OpenAI `file` object, plus `rows` (lenient clients keep extra keys)."""
    return {"id": file.id, "object": "file", "bytes": file.bytes,
            "created_at": unix(file.created_at), "filename": file.filename,
            "purpose": file.purpose, "status": file.status,
            "status_details": file.status_details, "expires_at": unix(file.expires_at),
            "rows": file.rows}


def storage_key(tenant_id: str, file_id: str, filename: str) -> str:
    """Where a file's bytes live: its id, plus its name's extension when that is a plain one."""
    suffix = PurePosixPath(filename).suffix.lower()
    return f"files/{tenant_id}/{file_id}{suffix if _SAFE_SUFFIX.match(suffix) else ''}"


def _owned(tenant_id: str, file_id: str, *, include_expired: bool = False) -> Select[File]:
    # An id that no id could be (a NUL byte, 10 kB) matches nothing without asking the
    # database, which would refuse some of them (Postgres text cannot hold NUL) with a 500.
    if not _PLAUSIBLE_ID.match(file_id):
        return select(File).where(false())
    query = select(File).where(File.id == file_id, File.tenant_id == tenant_id)
    return query if include_expired else query.where(live_file())


def get_file(session: Session, tenant_id: str, file_id: str, *, param: str = "file_id",
             for_share: bool = False, include_expired: bool = False) -> File:
    """The tenant's file `file_id`, else NotFoundError naming `param` (another tenant's id, a
    malformed id and an expired file answer exactly like a missing one).

    `for_share` locks the row (FOR SHARE on Postgres) until the transaction ends, so that a
    job created with this file cannot race `delete_file`, which locks it FOR UPDATE.
    `include_expired` is for the worker, which still reads an expired file for the
    unfinished jobs and evaluations created before it expired.
    """
    query = _owned(tenant_id, file_id, include_expired=include_expired)
    if for_share:
        query = query.with_for_update(read=True)
    file = session.scalar(query)
    if file is None:
        raise NotFoundError(f"no file {file_id!r}", param=param)
    return file


def _clean_filename(filename: str | None) -> str:
    # Browsers and some clients send a path; only its last part is the name.
    name = PureWindowsPath(PurePosixPath(filename or "").name).name.strip()
    if not name:
        raise InvalidRequestError("the uploaded file has no filename", param="file")
    if len(name) > MAX_FILENAME:
        raise InvalidRequestError(f"filename is longer than {MAX_FILENAME} characters",
                                  param="file")
    return name


def _expiry_seconds(expires_after: Mapping[str, object] | None) -> int | None:
    if expires_after is None:
        return None
    anchor = expires_after.get("anchor")
    if anchor != "created_at":
        raise InvalidRequestError(f"expires_after.anchor must be 'created_at', got {anchor!r}",
                                  param="expires_after.anchor")
    raw = expires_after.get("seconds")
    try:
        seconds = int(str(raw))
    except ValueError:
        raise InvalidRequestError(f"expires_after.seconds must be an integer, got {raw!r}",
                                  param="expires_after.seconds") from None
    if not EXPIRES_MIN_S <= seconds <= EXPIRES_MAX_S:
        raise InvalidRequestError(f"expires_after.seconds must be in [{EXPIRES_MIN_S}, "
                                  f"{EXPIRES_MAX_S}], got {seconds}",
                                  param="expires_after.seconds")
    return seconds


def _copy_limited(stream: BinaryIO, target: IO[bytes], max_bytes: int) -> tuple[int, str]:
    """Copy `stream` to `target` in chunks, stopping as soon as the limit is passed (a body
    sent without Content-Length is never trusted to be small); returns (bytes, sha256). The
    upload never sits whole in memory."""
    digest = hashlib.sha256()
    total = 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"the file is larger than the limit of {max_bytes} "
                                       "bytes", param="file")
        digest.update(chunk)
        target.write(chunk)
    target.flush()
    return total, digest.hexdigest()


@contextlib.contextmanager
def _spool(folder: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A new spool file in `folder`, locked (flock) while it is in use and removed after.
    A process killed meanwhile (SIGKILL) loses its lock with its life, which is how
    `remove_orphan_spools` tells its spool from a live one."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".jsonl", dir=folder)
    try:
        with os.fdopen(fd, "w+b") as spool:
            fcntl.flock(spool.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield spool, Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def remove_orphan_spools(folder: Path, *, min_age_s: float = ORPHAN_SPOOL_AGE_S) -> list[Path]:
    """Remove the spools in `folder` that no process holds (left by a killed upload) and
    that are older than `min_age_s`; returns what was removed. Safe while other processes
    upload: a spool in use is locked, so it is left alone."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    cutoff = time.time() - min_age_s
    for path in folder.glob(f"{SPOOL_PREFIX}*.jsonl"):
        try:
            if path.stat().st_mtime > cutoff:
                continue
            with open(path, "rb") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # an upload in progress
                path.unlink(missing_ok=True)
                removed.append(path)
        except FileNotFoundError:
            continue  # its upload finished meanwhile
    return removed


def _invalid_file(message: str) -> InvalidRequestError:
    error = InvalidRequestError(message, param="file")
    error.code = "invalid_file"
    return error


def _store(session: Session, storage: ArtifactStorage, file: File, data: bytes) -> File:
    """Write the bytes, then the row; a row that cannot be written takes its bytes with it."""
    storage.put_bytes(file.storage_key, data)
    return _store_row(session, storage, file)


def _store_row(session: Session, storage: ArtifactStorage, file: File) -> File:
    """Add the row of bytes already stored; a row that cannot be written takes them along."""
    try:
        session.add(file)
        session.flush()
    except BaseException:
        storage.delete(file.storage_key)
        raise
    return file


def validate_spooled(path: str) -> tuple[bool, int | str]:
    """(True, rows) for a valid JSONL dataset at `path`, else (False, the error message);
    read a line at a time."""
    if Path(path).stat().st_size >= VALIDATE_APART_BYTES:
        return _validate_apart(path)
    try:
        return True, validate_jsonl_file(path)
    except DatasetError as exc:
        return False, str(exc)


# The child of `_validate_apart`: paec.data alone (no torch, no database), one JSON line out.
_CHILD = """
import json, sys
from paec.data import validate_jsonl_file
from paec.errors import DatasetError
try:
    out = [True, validate_jsonl_file(sys.argv[1])]
except DatasetError as exc:
    out = [False, str(exc)]
print(json.dumps(out))
"""


def _validate_apart(path: str) -> tuple[bool, int | str]:
    """`validate_spooled` in a child process of its own, for a large upload: parsing a 100 MB
    dataset is seconds of pure-Python CPU, and in a thread of the API it holds the GIL that
    the event loop needs for every other request (status polls waited up to 1.5 s behind
    it: bench/load.py). A fresh interpreter per large upload (about 0.1 s) rather than a
    pool: it ends by itself when its file is read, so nothing outlives the API."""
    done = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the upload validator failed ({done.returncode}): "
                           f"{done.stderr[-500:]}")
    ok, value = json.loads(done.stdout)
    return bool(ok), value


def create_file(session: Session, storage: ArtifactStorage, tenant_id: str, *,
                filename: str | None, purpose: str, stream: BinaryIO, max_bytes: int,
                spool_dir: Path, expires_after: Mapping[str, object] | None = None) -> File:
    """Validate and store an uploaded dataset; return its `processed` File row.

    Raises InvalidRequestError (param `purpose`, `file`, `expires_after.*`; code
    `invalid_file` with every bad row listed when the JSONL is invalid or empty) or
    PayloadTooLargeError past `max_bytes`. Nothing is stored unless everything is valid. If
    the caller's commit fails it must delete `storage_key` of the returned row. The upload
    is spooled in `spool_dir` (Settings.resolved_spool_dir), whose orphans are removed first.
    """
    if purpose != FINE_TUNE:
        raise InvalidRequestError(f"purpose must be {FINE_TUNE!r}, got {purpose!r}",
                                  param="purpose")
    name = _clean_filename(filename)
    if not name.lower().endswith(".jsonl"):
        raise _invalid_file(f"fine-tuning files must be JSONL with a .jsonl name, got {name!r}")
    seconds = _expiry_seconds(expires_after)
    remove_orphan_spools(spool_dir)
    with _spool(spool_dir) as (spool, spool_path):
        size, sha256 = _copy_limited(stream, spool, max_bytes)
        ok, rows_or_message = validate_spooled(str(spool_path))
        if not ok:
            raise _invalid_file(f"{name}: {rows_or_message}")
        rows = int(rows_or_message)
        now = utcnow()
        file_id = ids.new_id(ids.FILE)
        file = File(id=file_id, tenant_id=tenant_id, filename=name, purpose=FINE_TUNE,
                    bytes=size, sha256=sha256, rows=rows, status="processed",
                    storage_key=storage_key(tenant_id, file_id, name), created_at=now,
                    expires_at=None if seconds is None else now + timedelta(seconds=seconds))
        storage.put_file(file.storage_key, spool_path)
        return _store_row(session, storage, file)


def create_result_file(session: Session, storage: ArtifactStorage, tenant_id: str,
                       filename: str, data: bytes, purpose: str = RESULTS) -> File:
    """Store a file the service wrote itself (no validation), e.g. a finished job's metrics
    CSV; returns its `processed` row. The caller commits (and on failure deletes the bytes)."""
    file_id = ids.new_id(ids.FILE)
    file = File(id=file_id, tenant_id=tenant_id, filename=filename, purpose=purpose,
                bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), rows=None,
                status="processed", storage_key=storage_key(tenant_id, file_id, filename),
                created_at=utcnow())
    return _store(session, storage, file, data)


def list_files(session: Session, tenant_id: str, *, after: str | None = None,
               limit: int = MAX_LIST, order: str = "desc", purpose: str | None = None,
               ) -> tuple[list[File], bool]:
    """One page of the tenant's files, newest first (`desc`) or oldest first (`asc`), after
    the file `after` in that order; returns (files, has_more)."""
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequestError(f"limit must be in [1, {MAX_LIST}], got {limit}",
                                  param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"order must be 'asc' or 'desc', got {order!r}",
                                  param="order")
    query = select(File).where(File.tenant_id == tenant_id, live_file())
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        cursor_file = session.scalar(_owned(tenant_id, after))
        if cursor_file is None:
            raise InvalidRequestError(f"no file {after!r} to list after", param="after")
        cursor = cursor_file.seq
        query = query.where(File.seq < cursor if order == "desc" else File.seq > cursor)
    query = query.order_by(File.seq.desc() if order == "desc" else File.seq.asc())
    files = list(session.scalars(query.limit(limit + 1)))
    return files[:limit], len(files) > limit


def list_object(files: list[File], has_more: bool) -> dict[str, Any]:
    """The OpenAI file list envelope."""
    return {"object": "list", "data": [file_object(f) for f in files],
            "first_id": files[0].id if files else None,
            "last_id": files[-1].id if files else None, "has_more": has_more}


def deleted_object(file: File) -> dict[str, Any]:
    """OpenAI's answer to a file delete."""
    return {"id": file.id, "object": "file", "deleted": True}


def file_users(session: Session, tenant_id: str, file_id: str) -> list[str]:
    """`<id> (<status>)` of the tenant's jobs that have not finished and use the file as
    their training or validation file, then of its unfinished evaluations that name it as a
    dataset; empty when nothing unfinished uses it."""
    jobs = session.execute(
        select(Job.id, Job.status)
        .where(Job.tenant_id == tenant_id,
               or_(Job.training_file == file_id, Job.validation_file == file_id),
               Job.status.not_in([str(s) for s in TERMINAL]))
        .order_by(Job.seq)).all()
    # `datasets` is a JSON list: the few unfinished evaluations are matched here (the same
    # on Postgres and SQLite).
    evaluations = [(evaluation_id, status) for evaluation_id, status, datasets in
                   session.execute(select(Evaluation.id, Evaluation.status,
                                          Evaluation.datasets)
                                   .where(Evaluation.tenant_id == tenant_id,
                                          Evaluation.status.in_(_ACTIVE_EVALUATIONS))
                                   .order_by(Evaluation.seq))
                   if file_id in datasets]
    return [f"{object_id} ({status})" for object_id, status in [*jobs, *evaluations]]


def delete_file(session: Session, tenant_id: str, file_id: str) -> File:
    """Delete the file's row and return it; the caller deletes `storage_key` after its commit
    (a failed commit then leaves the file whole). ConflictError (naming the file) while a job
    or an evaluation that has not finished uses it (an evaluation whose dataset vanished
    failed with internal_error). Evaluations take the same FOR SHARE lock on their files as
    jobs, so a new one cannot race this."""
    file = session.scalar(_owned(tenant_id, file_id).with_for_update())
    if file is None:
        raise NotFoundError(f"no file {file_id!r}", param="file_id")
    users = file_users(session, tenant_id, file_id)
    if users:
        raise ConflictError(f"file {file_id} is used by job(s) or evaluation(s) that have not "
                            f"finished: {', '.join(users[:5])}; cancel them or wait for them "
                            "to finish", param="file_id")
    session.delete(file)
    session.flush()
    return file


def purge_expired_files(session: Session, *, now: datetime | None = None) -> list[str]:
    """Delete the rows of the expired files that no unfinished job or evaluation uses
    (rows another sweep holds locked are left to it); returns their storage keys, which
    the caller deletes after its commit (the sweeper does). A file still in use is kept,
    readable by the worker, until its users finish; the next sweep after that removes it."""
    now = now or utcnow()
    keys: list[str] = []
    for file in session.scalars(select(File).where(File.expires_at <= now)
                                .order_by(File.seq).with_for_update(skip_locked=True)).all():
        if file_users(session, file.tenant_id, file.id):
            continue
        keys.append(file.storage_key)
        session.delete(file)
    session.flush()
    return keys


def open_file(session: Session, storage: ArtifactStorage, tenant_id: str,
              file_id: str, *, include_expired: bool = False) -> tuple[File, BinaryIO]:
    """The file's row and a reader of its bytes (the caller closes it); `include_expired`
    as for `get_file`."""
    file = get_file(session, tenant_id, file_id, include_expired=include_expired)
    try:
        return file, storage.open(file.storage_key)
    except FileNotFoundError:
        raise NotFoundError(f"the content of file {file_id!r} is missing from storage",
                            param="file_id") from None


def copy_file_to(session: Session, storage: ArtifactStorage, tenant_id: str, file_id: str,
                 target: Path) -> File:
    """Copy the file's bytes to `target` in chunks (the worker's local copy of a dataset).
    An expired file is still copied: the job or evaluation asking was created before it
    expired, and `purge_expired_files` keeps it while they are unfinished."""
    file, reader = open_file(session, storage, tenant_id, file_id, include_expired=True)
    with reader, open(target, "wb") as out:
        shutil.copyfileobj(reader, out, CHUNK)
    return file


def read_file_bytes(session: Session, storage: ArtifactStorage, tenant_id: str,
                    file_id: str) -> bytes:
    """All the bytes of the tenant's file (the worker reads datasets with it); NotFoundError
    when the file or its bytes are absent."""
    _, reader = open_file(session, storage, tenant_id, file_id)
    with reader:
        return reader.read()
