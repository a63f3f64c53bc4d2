"""Files (docs/openai.md 3.7): the upload form, the file object, its list and its deletion.

The upload is multipart/form-data, as OpenAI's client sends it: `file` (a .jsonl dataset),
`purpose` ("fine-tune"), and optionally `expires_after[anchor]` with `expires_after[seconds]`
(both or neither). The file's rows are validated in full before anything is stored
(store.files); a bad row is a 400 naming its line and field.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Wire, not_null
from store.files import EXPIRES_MAX_S, EXPIRES_MIN_S, FINE_TUNE


def _describe_form(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    for name, prop in properties.items():
        properties[name] = not_null(prop)
    # JSON Schema's own way to say "both or neither" (OpenAPI 3.1).
    schema["dependentRequired"] = {"expires_after[anchor]": ["expires_after[seconds]"],
                                   "expires_after[seconds]": ["expires_after[anchor]"]}
    schema["examples"] = [{"file": '{"prompt": "What is 1 + 1?", "answer": "2"}\n',
                           "purpose": FINE_TUNE}]


class FileUpload(BaseModel):
    """The upload form (other fields are ignored, as they always were here)."""

    model_config = ConfigDict(json_schema_extra=_describe_form)

    file: UploadFile = Field(description="A JSONL dataset with a `.jsonl` name, one problem "
                                         "a line (`prompt` or `messages`, and `answer`).")
    purpose: Literal["fine-tune"] = Field(description=f"Only {FINE_TUNE!r}.")
    expires_after_anchor: Literal["created_at"] | None = Field(
        default=None, alias="expires_after[anchor]")
    expires_after_seconds: int | None = Field(
        default=None, alias="expires_after[seconds]", ge=EXPIRES_MIN_S, le=EXPIRES_MAX_S,
        description="After this many seconds from its creation the file is gone.")

    def expires_after(self) -> dict[str, object] | None:
        """`expires_after` as store.files takes it (None when neither field was sent)."""
        if self.expires_after_anchor is None and self.expires_after_seconds is None:
            return None
        return {"anchor": self.expires_after_anchor, "seconds": self.expires_after_seconds}


UPLOAD_ENCODING = {"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {
    "headers": {"Content-Disposition": {"schema": {
        "type": "string", "example": 'form-data; name="file"; filename="train.jsonl"'}}}}}}}}}
"""How the file part is sent: with a name ending in `.jsonl`."""


class FileObject(Wire):
    """OpenAI's `file`, plus `rows` (the dataset's row count; null for result files)."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str = Field(description="`fine-tune` (uploads) or `fine-tune-results` (the "
                                     "metrics CSV of a finished job).")
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None
    expires_at: int | None
    rows: int | None


class FileList(Wire):
    """A page of the tenant's files."""

    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(Wire):
    """The answer to a delete."""

    id: str
    object: Literal["file"]
    deleted: bool
