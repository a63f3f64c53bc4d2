"""/v1/files: upload, list, retrieve, delete and download datasets (OpenAI `files.*`).

The upload is multipart/form-data (`file`, `purpose`, optional `expires_after[anchor]` and
`expires_after[seconds]`). The form is parsed by `upload_form` rather than by FastAPI's
`File()`/`Form()` so that the body is counted while it arrives: a body without a
Content-Length (chunked) is cut off once it passes the limit instead of being spooled to
disk whole. The service then reads the file part in chunks against the exact limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from api.deps import ServicesDep, SessionDep, TenantDep
from store import files
from store.errors import InvalidRequestError, PayloadTooLargeError
from store.storage import iter_range

router = APIRouter(prefix="/v1/files", tags=["files"])

FORM_SLACK_BYTES = 64 * 1024
"""Room for the multipart headers and the small fields around the file part."""


@dataclass
class UploadForm:
    """The parsed upload form."""

    file: UploadFile
    purpose: str
    expires_after: dict[str, object] | None


class _CountingReceive:
    """An ASGI receive that raises PayloadTooLargeError once the body passes `limit`."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive, self.limit, self.seen = receive, limit, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise PayloadTooLargeError(f"request body is over the limit of {self.limit} "
                                           "bytes", param="file")
        return message


async def upload_form(request: Request, services: ServicesDep) -> AsyncIterator[UploadForm]:
    """The upload's fields, read under the upload limit; the file part is closed afterwards."""
    limit = services.settings.max_upload_bytes + FORM_SLACK_BYTES
    counted = Request(request.scope, receive=_CountingReceive(request.receive, limit))
    async with counted.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("a multipart/form-data field 'file' holding the file is "
                                      "required", param="file")
        purpose = form.get("purpose")
        if not isinstance(purpose, str):
            raise InvalidRequestError("the field 'purpose' is required", param="purpose")
        anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        expires: dict[str, object] | None = None
        if anchor is not None or seconds is not None:
            expires = {"anchor": anchor, "seconds": seconds}
        yield UploadForm(upload, purpose, expires)


# The form is parsed by a dependency, so FastAPI cannot describe it: say it here.
_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["file", "purpose"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a .jsonl dataset"},
        "purpose": {"type": "string", "enum": [files.FINE_TUNE]},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": files.EXPIRES_MIN_S,
                                   "maximum": files.EXPIRES_MAX_S}}}}}}}


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
def create_file(tenant: TenantDep, form: Annotated[UploadForm, Depends(upload_form)],
                services: ServicesDep, session: SessionDep) -> dict[str, Any]:
    """Upload a JSONL dataset; it is validated in full before anything is stored."""
    file = files.create_file(session, services.storage, tenant.id,
                             filename=form.file.filename, purpose=form.purpose,
                             stream=form.file.file, max_bytes=services.settings.max_upload_bytes,
                             spool_dir=services.settings.resolved_spool_dir,
                             expires_after=form.expires_after)
    try:
        session.commit()
    except BaseException:
        services.storage.delete(file.storage_key)  # no bytes without their row
        raise
    return files.file_object(file)


@router.get("")
def list_files(tenant: TenantDep, session: SessionDep, after: str | None = None,
               limit: Annotated[int, Query(ge=1, le=files.MAX_LIST)] = files.MAX_LIST,
               order: Literal["asc", "desc"] = "desc",
               purpose: str | None = None) -> dict[str, Any]:
    """The tenant's files, newest first unless `order=asc`."""
    page, has_more = files.list_files(session, tenant.id, after=after, limit=limit,
                                      order=order, purpose=purpose)
    return files.list_object(page, has_more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """One file."""
    return files.file_object(files.get_file(session, tenant.id, file_id))


@router.delete("/{file_id}")
def delete_file(file_id: str, tenant: TenantDep, services: ServicesDep,
                session: SessionDep) -> dict[str, Any]:
    """Delete a file (409 while a job or an evaluation that has not finished uses it)."""
    file = files.delete_file(session, tenant.id, file_id)
    session.commit()
    # After the commit: a failed commit must leave the file whole.
    services.storage.delete(file.storage_key)
    return {"id": file.id, "object": "file", "deleted": True}


@router.get("/{file_id}/content")
def file_content(file_id: str, tenant: TenantDep, services: ServicesDep,
                 session: SessionDep) -> StreamingResponse:
    """The file's bytes, streamed from storage."""
    file, reader = files.open_file(session, services.storage, tenant.id, file_id)
    session.close()  # the bytes stream from storage: hold no database connection meanwhile
    return StreamingResponse(
        iter_range(reader, 0, file.bytes), media_type="application/octet-stream",
        headers={"content-length": str(file.bytes),
                 "content-disposition": f"attachment; filename*=UTF-8''{quote(file.filename)}"})
