"""Request dependencies: the service's resources (on `app.state`), a database session per
request, and the tenant behind the bearer key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from store.models import Tenant
from store.queue import TaskQueue
from store.settings import Settings
from store.storage import LocalStorage
from store.tenants import authenticate


@dataclass
class Services:
    """What every route may use; built once in `create_app`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: LocalStorage
    queue: TaskQueue


def get_services(request: Request) -> Services:
    """The app's services."""
    services: Services = request.app.state.services
    return services


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    """A session for the request; routes commit explicitly, anything else rolls back."""
    with services.sessions() as session:
        yield session


def get_tenant(request: Request, services: Annotated[Services, Depends(get_services)],
               session: Annotated[Session, Depends(get_session)],
               authorization: Annotated[str | None, Header(include_in_schema=False)] = None
               ) -> Tenant:
    """The caller's tenant (401 in the OpenAI envelope without a valid key). Requests with a
    body were authenticated by api/middleware.py before it was read: that tenant is reused.
    The key is documented by the schema's security scheme (api/openapi.py)."""
    tenant: Tenant | None = getattr(request.state, "tenant", None)
    if tenant is not None:
        return tenant
    return authenticate(session, authorization, cache_s=services.settings.auth_cache_s)


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
