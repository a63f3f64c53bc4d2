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
from store.permissions import (
    Order,
    PermissionCreateRequest,
    create_permissions,
    delete_permission,
    deleted_object,
    list_permissions,
    permission_object,
)

router = APIRouter(tags=["checkpoint permissions"])
PREFIX = "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint:path}/permissions"


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.post(PREFIX)
def create(fine_tuned_model_checkpoint: str, body: PermissionCreateRequest,
           tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """Share the caller's checkpoint with other projects (tenants)."""
    rows = create_permissions(session, tenant.id, fine_tuned_model_checkpoint,
                              body.project_ids)
    session.commit()
    return _page([permission_object(row) for row in rows], False)


@router.get(PREFIX)
def list_(fine_tuned_model_checkpoint: str, tenant: TenantDep, session: SessionDep,
          after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10,
          order: Order = Order.DESCENDING, project_id: str | None = None) -> dict[str, Any]:
    """The checkpoint's permissions, newest first unless `order=ascending`."""
    rows, has_more = list_permissions(session, tenant.id, fine_tuned_model_checkpoint,
                                      after=after, limit=limit, order=order,
                                      project_id=project_id)
    return _page([permission_object(row) for row in rows], has_more)


@router.delete(PREFIX + "/{permission_id}")
def delete(fine_tuned_model_checkpoint: str, permission_id: str, tenant: TenantDep,
           session: SessionDep) -> dict[str, Any]:
    """Revoke one permission: the project can no longer start jobs or evaluations on it."""
    permission = delete_permission(session, tenant.id, fine_tuned_model_checkpoint,
                                   permission_id)
    session.commit()
    return deleted_object(permission)
