"""Checkpoints: OpenAI's job checkpoint list under /v1, and the native routes that describe
a checkpoint and serve its archive.

    GET  /v1/fine_tuning/jobs/{job_id}/checkpoints   ?after=<checkpoint id>&limit=10
    GET  /api/checkpoints/{checkpoint_id}
    GET  /api/checkpoints/{checkpoint_id}/download   ?contents=model|full (also HEAD)

A checkpoint has two archives (store.checkpoints): `model` (the default: weights in their
trained dtype, configs, tokenizer, sidecar; what `from_pretrained` loads, a LoRA job's
merged) and `full` (the training state too: what a job resumes from). A checkpoint
registered before model-only archives has only `full`; asking it for `model` is a 404
naming `contents`. Everything below refers to the archive served, which the file name of
`Content-Disposition` (`<job>-step-<n>-model.tar`) and `x-checkpoint-contents` say.

The download streams the tar from storage in chunks (never whole in memory) and supports
resumable transfers (RFC 9110): `ETag` is the archive's quoted sha256, so `If-None-Match`
answers 304 and `If-Range` with another tag ignores `Range`; one `Range` (`bytes=a-b`,
`bytes=a-`, `bytes=-n`) answers 206, an unsatisfiable one 416. Multi-range requests get the
whole archive (200), which the RFC allows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.deps import ServicesDep, SessionDep, TenantDep
from api.schemas.checkpoints import Checkpoint, CheckpointList
from api.schemas.errors import ERROR_CONTENT
from store.checkpoints import (
    ArchiveContents,
    checkpoint_archive,
    checkpoint_list_object,
    checkpoint_object,
    get_checkpoint,
    list_job_checkpoints,
)
from store.errors import NotFoundError, ServiceError
from store.storage import iter_range

router = APIRouter(tags=["checkpoints"])

# One range only: a list (`0-1,5-9`) does not match and gets the whole archive.
_RANGE_SPEC = re.compile(r"([0-9]{0,19})-([0-9]{0,19})")


class RangeNotSatisfiableError(ServiceError):
    """A `Range` that selects no byte of the archive."""

    status_code = 416
    error_type = "invalid_request_error"
    code = "range_not_satisfiable"
    retryable = False


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointList,
            response_model_exclude_unset=True)
def list_checkpoints(job_id: str, tenant: TenantDep, session: SessionDep,
                     after: Annotated[str | None, Query(
                         min_length=1, description="The last checkpoint id of the previous "
                                                   "page.")] = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
    """The job's checkpoints, newest first (OpenAI's list envelope with first/last ids)."""
    rows, has_more = list_job_checkpoints(session, tenant.id, job_id, after=after,
                                          limit=limit)
    return checkpoint_list_object(rows, has_more)


@router.get("/api/checkpoints/{checkpoint_id}", response_model=Checkpoint,
            response_model_exclude_unset=True)
def retrieve_checkpoint(checkpoint_id: str, tenant: TenantDep, session: SessionDep
                        ) -> dict[str, Any]:
    """One checkpoint, in the list's shape."""
    return checkpoint_object(get_checkpoint(session, tenant.id, checkpoint_id))


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match is a list of (possibly weak) tags or `*`; weak comparison applies.
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single-range `Range` header, or None to send
    the whole archive (absent, malformed, another unit, or several ranges: RFC 9110 lets a
    server ignore those). RangeNotSatisfiableError when the range selects no byte."""
    unit, _, spec = header.partition("=")
    match = _RANGE_SPEC.fullmatch(spec.strip())
    if unit.strip().lower() != "bytes" or match is None or match.group(0) == "-":
        return None
    first_text, last_text = match.groups()
    if not first_text:  # bytes=-n: the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(f"range {header!r} selects no byte of {size}")
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:  # a malformed range, ignored
        return None
    if first >= size:
        raise RangeNotSatisfiableError(f"range {header!r} starts past the end of the "
                                       f"{size}-byte archive")
    return first, min(int(last_text), size - 1) if last_text else size - 1


class Archive(Response):
    """A checkpoint's tar archive, or a range of it."""

    media_type = "application/x-tar"


_TAR = {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole archive.", "content": _TAR},
    206: {"description": "The `Range` asked for (`Content-Range` says which bytes).",
          "content": _TAR},
    304: {"description": "`If-None-Match` names the archive's ETag: nothing to send."},
    416: {"description": "The `Range` selects no byte of the archive.",
          "content": ERROR_CONTENT},
}


@router.head("/api/checkpoints/{checkpoint_id}/download",
             operation_id="head_checkpoint_download", response_class=Archive,
             responses=_DOWNLOAD_RESPONSES)
@router.get("/api/checkpoints/{checkpoint_id}/download", operation_id="download_checkpoint",
            response_class=Archive, responses=_DOWNLOAD_RESPONSES)
def download_checkpoint(
    checkpoint_id: str, request: Request, tenant: TenantDep, session: SessionDep,
    services: ServicesDep,
    contents: Annotated[ArchiveContents, Query(
        description="`model` (weights, configs, tokenizer) or `full` (also the training "
                    "state, to resume from).")] = ArchiveContents.MODEL,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A tar archive of the checkpoint (`contents`: model only, the default, or full state),
    resumable: `ETag` is its sha256 (`If-None-Match` answers 304), one `Range` answers 206
    (`If-Range` with another tag sends the whole archive), an unsatisfiable one 416."""
    checkpoint = get_checkpoint(session, tenant.id, checkpoint_id)
    archive = checkpoint_archive(checkpoint, contents)
    session.close()  # nothing else needs the database while the bytes stream
    storage = services.storage
    try:
        size = storage.size(archive.key)
    except FileNotFoundError:
        raise NotFoundError(f"the {contents} archive of checkpoint {checkpoint_id} is missing "
                            "from storage", param="checkpoint_id") from None
    etag = f'"{archive.sha256}"'
    name = f"{checkpoint.job_id}-step-{checkpoint.step}-{contents}.tar"
    headers = {
        "ETag": etag, "Accept-Ranges": "bytes", "x-checkpoint-sha256": archive.sha256,
        "x-checkpoint-contents": str(contents),
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    span: tuple[int, int] | None = None
    if range_ is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(range_, size)
        except RangeNotSatisfiableError as exc:
            return JSONResponse(exc.envelope(), status_code=416,
                                headers={"ETag": etag, "Accept-Ranges": "bytes",
                                         "Content-Range": f"bytes */{size}",
                                         "x-should-retry": "false"})
    status = 200
    first, length = 0, size
    if span is not None:
        status, first, length = 206, span[0], span[1] - span[0] + 1
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/x-tar")
    return StreamingResponse(iter_range(storage.open(archive.key), first, length),
                             status_code=status, headers=headers,
                             media_type="application/x-tar")
