"""/v1/files: upload, list, retrieve, delete and download datasets (OpenAI `files.*`).

The upload is multipart/form-data (api/schemas/files.py). Its body is counted while it
arrives (api/middleware.py), so a body without a Content-Length (chunked) is cut off once it
passes the limit instead of being spooled to disk whole; the service then reads the file part
in chunks against the exact limit. A form holds one file and a few fields at most.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Query
from fastapi.responses import StreamingResponse

from api.deps import ServicesDep, SessionDep, TenantDep
from api.schemas.files import (
    UPLOAD_ENCODING,
    FileDeleted,
    FileList,
    FileObject,
    FileUpload,
)
from store import files
from store.storage import iter_range

router = APIRouter(prefix="/v1/files", tags=["files"])

MAX_FORM_FILES = 1
MAX_FORM_FIELDS = 8
"""The upload form's one file and its few fields: a form of thousands of parts is refused
before it is parsed."""


class FileContent(StreamingResponse):
    """A file's bytes."""

    media_type = "application/octet-stream"


@router.post("", response_model=FileObject, response_model_exclude_unset=True,
             form_limits={"max_files": MAX_FORM_FILES, "max_fields": MAX_FORM_FIELDS},
             openapi_extra=UPLOAD_ENCODING)
def create_file(form: Annotated[FileUpload, Form(media_type="multipart/form-data")],
                tenant: TenantDep, services: ServicesDep,
                session: SessionDep) -> dict[str, Any]:
    """Upload a JSONL dataset; it is validated in full before anything is stored."""
    file = files.create_file(session, services.storage, tenant.id,
                             filename=form.file.filename, purpose=form.purpose,
                             stream=form.file.file, max_bytes=services.settings.max_upload_bytes,
                             spool_dir=services.settings.resolved_spool_dir,
                             expires_after=form.expires_after())
    try:
        session.commit()
    except BaseException:
        services.storage.delete(file.storage_key)  # no bytes without their row
        raise
    return files.file_object(file)


@router.get("", response_model=FileList, response_model_exclude_unset=True)
def list_files(tenant: TenantDep, session: SessionDep,
               after: Annotated[str | None, Query(
                   min_length=1, description="The last file id of the previous page.")] = None,
               limit: Annotated[int, Query(ge=1, le=files.MAX_LIST)] = files.MAX_LIST,
               order: Literal["asc", "desc"] = "desc",
               purpose: str | None = None) -> dict[str, Any]:
    """The tenant's files, newest first unless `order=asc`."""
    page, has_more = files.list_files(session, tenant.id, after=after, limit=limit,
                                      order=order, purpose=purpose)
    return files.list_object(page, has_more)


@router.get("/{file_id}", response_model=FileObject, response_model_exclude_unset=True)
def retrieve_file(file_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """One file."""
    return files.file_object(files.get_file(session, tenant.id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted, response_model_exclude_unset=True)
def delete_file(file_id: str, tenant: TenantDep, services: ServicesDep,
                session: SessionDep) -> dict[str, Any]:
    """Delete a file (409 while a job or an evaluation that has not finished uses it)."""
    file = files.delete_file(session, tenant.id, file_id)
    session.commit()
    # After the commit: a failed commit must leave the file whole.
    services.storage.delete(file.storage_key)
    return files.deleted_object(file)


@router.get("/{file_id}/content", response_class=FileContent, responses={200: {
    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
def file_content(file_id: str, tenant: TenantDep, services: ServicesDep,
                 session: SessionDep) -> FileContent:
    """The file's bytes, streamed from storage."""
    file, reader = files.open_file(session, services.storage, tenant.id, file_id)
    session.close()  # the bytes stream from storage: hold no database connection meanwhile
    return FileContent(
        iter_range(reader, 0, file.bytes),
        headers={"content-length": str(file.bytes),
                 "content-disposition": f"attachment; filename*=UTF-8''{quote(file.filename)}"})
