"""Checkpoint permissions (docs/openai.md 3.6): sharing a checkpoint with other projects
(tenants, `org-...`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from api.schemas.common import Strict, Wire
from store.permissions import MAX_PROJECTS

EXAMPLE_PROJECT = "org-abc123"
"""The project of the schema's example request (the fuzz test makes a tenant by this id)."""


class PermissionCreateRequest(Strict):
    """The body of `POST /v1/fine_tuning/checkpoints/{checkpoint}/permissions`."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"project_ids": [EXAMPLE_PROJECT]}]})

    project_ids: list[str] = Field(min_length=1, max_length=MAX_PROJECTS,
                                   description="The tenants (`org-...`) to share the "
                                               "checkpoint with.")


class Permission(Wire):
    """`checkpoint.permission`."""

    id: str
    object: Literal["checkpoint.permission"]
    created_at: int
    project_id: str


class PermissionList(Wire):
    """Permissions of a checkpoint."""

    object: Literal["list"]
    data: list[Permission]
    first_id: str | None
    last_id: str | None
    has_more: bool


class PermissionDeleted(Wire):
    """The answer to a delete."""

    id: str
    object: Literal["checkpoint.permission"]
    deleted: bool
