"""Files: uploaded datasets and the result files the worker writes (OpenAI `files.*`).

A dataset is validated in full (`paec.data.validate_jsonl_bytes`) before anything is stored, so
a bad upload leaves neither a row nor bytes behind and its error lists every bad row with its
line and field (openai-compat P1: validate at upload, not when the job fails). The bytes live
in artifact storage under `files/<tenant_id>/<file_id><ext>`; the row holds their size,
sha256 and row count. Another tenant's file is a NotFoundError, exactly like a missing one.

Service functions take a Session and do not commit. Bytes are written before the row is
flushed and deleted again if the flush fails; the caller deletes them if its commit fails
(`create_file`), and deletes a deleted file's bytes only after its commit (`delete_file`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any, BinaryIO

from sqlalchemy import Select, false, or_, select
from sqlalchemy.orm import Session

from paec.data import DatasetError, validate_jsonl_file
from store import ids
from store.db import unix, utcnow
from store.errors import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from store.models import File, Job
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
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_PLAUSIBLE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


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


def _owned(tenant_id: str, file_id: str) -> Select[File]:
    # An id that no id could be (a NUL byte, 10 kB) matches nothing without asking the
    # database, which would refuse some of them (Postgres text cannot hold NUL) with a 500.
    if not _PLAUSIBLE_ID.match(file_id):
        return select(File).where(false())
    return select(File).where(File.id == file_id, File.tenant_id == tenant_id)


def get_file(session: Session, tenant_id: str, file_id: str, *, param: str = "file_id",
             for_share: bool = False) -> File:
    """The tenant's file `file_id`, else NotFoundError naming `param` (another tenant's id and
    a malformed id answer exactly like a missing one).

    `for_share` locks the row (FOR SHARE on Postgres) until the transaction ends, so that a
    job created with this file cannot race `delete_file`, which locks it FOR UPDATE.
    """
    query = _owned(tenant_id, file_id)
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


def create_file(session: Session, storage: ArtifactStorage, tenant_id: str, *,
                filename: str | None, purpose: str, stream: BinaryIO, max_bytes: int,
                expires_after: Mapping[str, object] | None = None) -> File:
    """Validate and store an uploaded dataset; return its `processed` File row.

    Raises InvalidRequestError (param `purpose`, `file`, `expires_after.*`; code
    `invalid_file` with every bad row listed when the JSONL is invalid or empty) or
    PayloadTooLargeError past `max_bytes`. Nothing is stored unless everything is valid. If
    the caller's commit fails it must delete `storage_key` of the returned row.
    """
    if purpose != FINE_TUNE:
        raise InvalidRequestError(f"purpose must be {FINE_TUNE!r}, got {purpose!r}",
                                  param="purpose")
    name = _clean_filename(filename)
    if not name.lower().endswith(".jsonl"):
        raise _invalid_file(f"fine-tuning files must be JSONL with a .jsonl name, got {name!r}")
    seconds = _expiry_seconds(expires_after)
    with tempfile.NamedTemporaryFile(prefix="paec-upload-", suffix=".jsonl") as spool:
        size, sha256 = _copy_limited(stream, spool, max_bytes)
        try:
            rows = validate_jsonl_file(spool.name)  # a line at a time
        except DatasetError as exc:
            raise _invalid_file(f"{name}: {exc}") from None
        now = utcnow()
        file_id = ids.new_id(ids.FILE)
        file = File(id=file_id, tenant_id=tenant_id, filename=name, purpose=FINE_TUNE,
                    bytes=size, sha256=sha256, rows=rows, status="processed",
                    storage_key=storage_key(tenant_id, file_id, name), created_at=now,
                    expires_at=None if seconds is None else now + timedelta(seconds=seconds))
        storage.put_file(file.storage_key, Path(spool.name))
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
    query = select(File).where(File.tenant_id == tenant_id)
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


def delete_file(session: Session, tenant_id: str, file_id: str) -> File:
    """Delete the file's row and return it; the caller deletes `storage_key` after its commit
    (a failed commit then leaves the file whole). ConflictError while a job that has not
    finished uses it as its training or validation file."""
    file = session.scalar(_owned(tenant_id, file_id).with_for_update())
    if file is None:
        raise NotFoundError(f"no file {file_id!r}", param="file_id")
    users = session.execute(
        select(Job.id, Job.status)
        .where(Job.tenant_id == tenant_id,
               or_(Job.training_file == file_id, Job.validation_file == file_id),
               Job.status.not_in([str(s) for s in TERMINAL]))
        .order_by(Job.seq)).all()
    if users:
        jobs = ", ".join(f"{job_id} ({status})" for job_id, status in users[:5])
        raise ConflictError(f"file {file_id} is used by job(s) that have not finished: {jobs}; "
                            "cancel them or wait for them to finish", param="file_id")
    session.delete(file)
    session.flush()
    return file


def open_file(session: Session, storage: ArtifactStorage, tenant_id: str,
              file_id: str) -> tuple[File, BinaryIO]:
    """The file's row and a reader of its bytes (the caller closes it)."""
    file = get_file(session, tenant_id, file_id)
    try:
        return file, storage.open(file.storage_key)
    except FileNotFoundError:
        raise NotFoundError(f"the content of file {file_id!r} is missing from storage",
                            param="file_id") from None


def copy_file_to(session: Session, storage: ArtifactStorage, tenant_id: str, file_id: str,
                 target: Path) -> File:
    """Copy the file's bytes to `target` in chunks (the worker's local copy of a dataset)."""
    file, reader = open_file(session, storage, tenant_id, file_id)
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
