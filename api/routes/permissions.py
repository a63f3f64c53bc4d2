"""Checkpoint permissions: OpenAI's `fine_tuning.checkpoints.permissions` under /v1.

    POST   /v1/fine_tuning/checkpoints/{checkpoint}/permissions   body {"project_ids": [...]}
    GET    /v1/fine_tuning/checkpoints/{checkpoint}/permissions
           ?after=<permission id>&limit=10&order=descending&project_id=<tenant id>
    DELETE /v1/fine_tuning/checkpoints/{checkpoint}/permissions/{permission_id}

`{checkpoint}` is a `fine_tuned_model_checkpoint` name or a job's `fine_tuned_model` (its
newest checkpoint); a project is a tenant (`org-...`). The semantics are in
store/permissions.py. The name is a `path` parameter because a base model such as
`local:org/name` keeps its `/`, which the client sends as `%2F` and the server decodes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SessionDep, TenantDep
from api.schemas.permissions import (
    PermissionCreateRequest,
    PermissionDeleted,
    PermissionList,
)
from store.permissions import (
    Order,
    create_permissions,
    delete_permission,
    deleted_object,
    list_permissions,
    permission_list_object,
)

router = APIRouter(tags=["checkpoint permissions"])
PREFIX = "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint:path}/permissions"


@router.post(PREFIX, response_model=PermissionList, response_model_exclude_unset=True)
def create(fine_tuned_model_checkpoint: str, body: PermissionCreateRequest,
           tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """Share the caller's checkpoint with other projects (tenants)."""
    rows = create_permissions(session, tenant.id, fine_tuned_model_checkpoint,
                              body.project_ids)
    session.commit()
    return permission_list_object(rows, False)


@router.get(PREFIX, response_model=PermissionList, response_model_exclude_unset=True)
def list_(fine_tuned_model_checkpoint: str, tenant: TenantDep, session: SessionDep,
          after: Annotated[str | None, Query(
              min_length=1, description="The last permission id of the previous page.")] = None,
          limit: Annotated[int, Query(ge=1, le=100)] = 10,
          order: Order = Order.DESCENDING, project_id: str | None = None) -> dict[str, Any]:
    """The checkpoint's permissions, newest first unless `order=ascending`."""
    rows, has_more = list_permissions(session, tenant.id, fine_tuned_model_checkpoint,
                                      after=after, limit=limit, order=order,
                                      project_id=project_id)
    return permission_list_object(rows, has_more)


@router.delete(PREFIX + "/{permission_id}", response_model=PermissionDeleted,
               response_model_exclude_unset=True)
def delete(fine_tuned_model_checkpoint: str, permission_id: str, tenant: TenantDep,
           session: SessionDep) -> dict[str, Any]:
    """Revoke one permission: the project can no longer start jobs or evaluations on it."""
    permission = delete_permission(session, tenant.id, fine_tuned_model_checkpoint,
                                   permission_id)
    session.commit()
    return deleted_object(permission)
