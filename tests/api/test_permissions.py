"""Checkpoint permissions over real HTTP, driven by the official client: the owner shares a
checkpoint with another tenant, which may then start evaluations and jobs on it until the
owner revokes the permission; nobody else may use, list, grant or revoke anything."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from store.checkpoints import fine_tuned_model_name, register_checkpoint
from store.db import transaction
from store.models import CheckpointPermission, Job
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_file, make_job, new_tenant_key

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}


@dataclass
class Trained:
    """A succeeded job of the owner with checkpoints at steps 2 and 4."""

    job_id: str
    fine_tuned_model: str
    checkpoints: dict[int, str]
    """step -> fine_tuned_model_checkpoint name"""


@dataclass
class Tenant:
    """Another tenant, with clients of its own."""

    id: str
    http: httpx.Client
    client: OpenAI


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    (root / "config.json").write_text('{"model_type": "llama"}')
    return root


def train(sessions: sessionmaker[Session], settings: Settings, tenant_id: str, folder: Path,
          model: str = "builtin:smollm2-135m-instruct") -> Trained:
    """Arrange a succeeded job of `tenant_id` with checkpoints at steps 2 and 4."""
    job_id = make_job(sessions, tenant_id, status="succeeded", model=model)
    storage = LocalStorage(settings.resolved_artifacts_dir)
    names = {}
    with transaction(sessions) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        for step in (2, 4):
            names[step] = register_checkpoint(session, storage, job, step, folder,
                                              full_state=True, metrics={}).model_name
        job.fine_tuned_model = fine_tuned_model_name(job)
        return Trained(job_id, job.fine_tuned_model, names)


@pytest.fixture
def trained(sessions: sessionmaker[Session], service_settings: Settings,
            tenant: tuple[str, str], folder: Path) -> Trained:
    return train(sessions, service_settings, tenant[0], folder)


@pytest.fixture
def tenants(server: str, sessions: sessionmaker[Session]) -> Iterator[list[Tenant]]:
    """Three other tenants."""
    made = []
    for _ in range(3):
        tenant_id, key = new_tenant_key(sessions)
        made.append(Tenant(tenant_id,
                           httpx.Client(base_url=server, timeout=30,
                                        headers={"Authorization": f"Bearer {key}"}),
                           OpenAI(base_url=server + "/v1", api_key=key, max_retries=0)))
    yield made
    for t in made:
        t.http.close()
        t.client.close()


def evaluate(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/api/evaluations", json={"model": model, "datasets": ["builtin:add"]})


def refused(r: httpx.Response) -> bool:
    """Whether the response is the 400 of a model the caller may not use."""
    return r.status_code == 400 and (r.json()["error"]["code"], r.json()["error"]["param"]) \
        == ("model_not_found", "model")


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


# ---- sharing grants use; revoking takes it back ----

def test_a_granted_tenant_evaluates_the_checkpoint_until_it_is_revoked(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    grantee, stranger = tenants[0], tenants[1]
    name = trained.checkpoints[4]
    assert refused(evaluate(grantee.http, name))
    page = openai_client.fine_tuning.checkpoints.permissions.create(
        name, project_ids=[grantee.id])
    [permission] = page.data
    assert permission.object == "checkpoint.permission"
    assert permission.project_id == grantee.id
    assert permission.id.startswith("cp_") and permission.created_at > 0

    r = evaluate(grantee.http, name)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == name
    assert refused(evaluate(stranger.http, name))
    assert refused(evaluate(grantee.http, trained.checkpoints[2]))  # only what was shared

    deleted = openai_client.fine_tuning.checkpoints.permissions.delete(
        permission.id, fine_tuned_model_checkpoint=name)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        permission.id, "checkpoint.permission", True)
    assert refused(evaluate(grantee.http, name))


def test_a_granted_tenant_starts_a_job_from_the_checkpoint(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant],
        sessions: sessionmaker[Session]) -> None:
    grantee = tenants[0]
    name = trained.checkpoints[4]
    body = {"model": name, "training_file": make_file(sessions, grantee.id, rows=4),
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER,
                "hyperparameters": {"n_epochs": 1, "batch_size": 2, "group_size": 4}}}}
    assert refused(grantee.http.post("/v1/fine_tuning/jobs", json=body))
    openai_client.fine_tuning.checkpoints.permissions.create(name, project_ids=[grantee.id])
    r = grantee.http.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == name and r.json()["organization_id"] == grantee.id


def test_sharing_a_fine_tuned_model_shares_its_newest_checkpoint(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    grantee = tenants[0]
    openai_client.fine_tuning.checkpoints.permissions.create(
        trained.fine_tuned_model, project_ids=[grantee.id])
    assert evaluate(grantee.http, trained.fine_tuned_model).status_code == 200
    assert evaluate(grantee.http, trained.checkpoints[4]).status_code == 200
    assert refused(evaluate(grantee.http, trained.checkpoints[2]))
    # the same permission, whichever name the owner lists it by
    by_model = openai_client.fine_tuning.checkpoints.permissions.list(trained.fine_tuned_model)
    by_ckpt = openai_client.fine_tuning.checkpoints.permissions.list(trained.checkpoints[4])
    assert [p.id for p in by_model.data] == [p.id for p in by_ckpt.data]
    assert len(by_model.data) == 1


def test_a_checkpoint_name_with_a_slash_reaches_its_permissions(
        openai_client: OpenAI, sessions: sessionmaker[Session], service_settings: Settings,
        tenant: tuple[str, str], folder: Path, tenants: list[Tenant]) -> None:
    # a `local:org/name` base keeps its `/` in the names; the client sends it as %2F
    trained = train(sessions, service_settings, tenant[0], folder, model="local:acme/tiny")
    name = trained.checkpoints[4]
    assert "/" in name
    [permission] = openai_client.fine_tuning.checkpoints.permissions.create(
        name, project_ids=[tenants[0].id]).data
    listed = openai_client.fine_tuning.checkpoints.permissions.list(name)
    assert [p.id for p in listed.data] == [permission.id]
    assert openai_client.fine_tuning.checkpoints.permissions.delete(
        permission.id, fine_tuned_model_checkpoint=name).deleted


# ---- grants ----

def test_granting_again_returns_the_existing_permission(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    first = openai_client.fine_tuning.checkpoints.permissions.create(
        name, project_ids=[tenants[0].id]).data
    again = openai_client.fine_tuning.checkpoints.permissions.create(
        name, project_ids=[tenants[1].id, tenants[0].id, tenants[1].id]).data
    assert [p.project_id for p in again] == [tenants[1].id, tenants[0].id]
    assert again[1].id == first[0].id
    assert len(openai_client.fine_tuning.checkpoints.permissions.list(name).data) == 2


def test_an_unknown_project_is_a_400_naming_its_index_and_grants_nothing(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.fine_tuning.checkpoints.permissions.create(
            name, project_ids=[tenants[0].id, "org-doesnotexist"])
    assert info.value.param == "project_ids[1]"
    assert openai_client.fine_tuning.checkpoints.permissions.list(name).data == []
    assert refused(evaluate(tenants[0].http, name))


def test_sharing_with_your_own_project_is_a_400(
        openai_client: OpenAI, trained: Trained, tenant: tuple[str, str]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.fine_tuning.checkpoints.permissions.create(
            trained.checkpoints[4], project_ids=[tenant[0]])
    assert info.value.param == "project_ids[0]"


def test_an_empty_project_list_is_a_400(http: httpx.Client, trained: Trained) -> None:
    r = http.post(f"/v1/fine_tuning/checkpoints/{trained.checkpoints[4]}/permissions",
                  json={"project_ids": []})
    assert error_of(r, 400)["param"] == "project_ids"


# ---- only the owner ----

def test_only_the_owner_may_grant_list_or_revoke(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    grantee, stranger = tenants[0], tenants[1]
    name = trained.checkpoints[4]
    [permission] = openai_client.fine_tuning.checkpoints.permissions.create(
        name, project_ids=[grantee.id]).data
    for other in (grantee, stranger):  # a grantee cannot share further either
        perms = other.client.fine_tuning.checkpoints.permissions
        with pytest.raises(openai.NotFoundError) as info:
            perms.create(name, project_ids=[tenants[2].id])
        assert info.value.param == "fine_tuned_model_checkpoint"
        with pytest.raises(openai.NotFoundError):
            perms.list(name)
        with pytest.raises(openai.NotFoundError):
            perms.delete(permission.id, fine_tuned_model_checkpoint=name)
    assert [p.id for p in openai_client.fine_tuning.checkpoints.permissions.list(name).data] \
        == [permission.id]
    assert refused(evaluate(tenants[2].http, name))


def test_an_unknown_checkpoint_is_a_404(openai_client: OpenAI, tenants: list[Tenant]) -> None:
    with pytest.raises(openai.NotFoundError):
        openai_client.fine_tuning.checkpoints.permissions.create(
            "ft:nope:org-x:paec:ftjob-x:ckpt-step-1", project_ids=[tenants[0].id])


def test_revoking_twice_is_a_404(openai_client: OpenAI, trained: Trained,
                                 tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    perms = openai_client.fine_tuning.checkpoints.permissions
    [permission] = perms.create(name, project_ids=[tenants[0].id]).data
    perms.delete(permission.id, fine_tuned_model_checkpoint=name)
    with pytest.raises(openai.NotFoundError) as info:
        perms.delete(permission.id, fine_tuned_model_checkpoint=name)
    assert info.value.param == "permission_id"


def test_a_permission_is_revoked_only_through_its_own_checkpoint(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    perms = openai_client.fine_tuning.checkpoints.permissions
    [permission] = perms.create(trained.checkpoints[4], project_ids=[tenants[0].id]).data
    with pytest.raises(openai.NotFoundError):
        perms.delete(permission.id, fine_tuned_model_checkpoint=trained.checkpoints[2])
    assert evaluate(tenants[0].http, trained.checkpoints[4]).status_code == 200


def test_deleting_the_checkpoints_job_deletes_its_permissions(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant],
        sessions: sessionmaker[Session]) -> None:
    openai_client.fine_tuning.checkpoints.permissions.create(
        trained.checkpoints[4], project_ids=[tenants[0].id])
    with transaction(sessions) as session:
        session.execute(delete(Job).where(Job.id == trained.job_id))
    with sessions() as session:
        left = session.scalar(select(func.count()).select_from(CheckpointPermission)
                              .where(CheckpointPermission.project_id == tenants[0].id))
    assert left == 0
    assert refused(evaluate(tenants[0].http, trained.checkpoints[4]))


# ---- the list ----

def test_the_list_pages_newest_first_and_in_either_order(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    perms = openai_client.fine_tuning.checkpoints.permissions
    made = [perms.create(name, project_ids=[t.id]).data[0].id for t in tenants]

    page = perms.list(name, limit=2)
    assert [p.id for p in page.data] == made[::-1][:2]
    assert (page.has_more, page.first_id, page.last_id) == (True, made[2], made[1])
    assert [p.id for p in perms.list(name, limit=2)] == made[::-1]  # auto-paging
    assert [p.id for p in perms.list(name, order="ascending", limit=1)] == made
    last = perms.list(name, order="ascending", after=made[1])
    assert ([p.id for p in last.data], last.has_more) == ([made[2]], False)


def test_the_list_filters_by_project(openai_client: OpenAI, trained: Trained,
                                     tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    perms = openai_client.fine_tuning.checkpoints.permissions
    perms.create(name, project_ids=[t.id for t in tenants])
    page = perms.list(name, project_id=tenants[1].id)
    assert [p.project_id for p in page.data] == [tenants[1].id]


def test_the_deprecated_retrieve_reads_the_same_list(
        openai_client: OpenAI, trained: Trained, tenants: list[Tenant]) -> None:
    name = trained.checkpoints[4]
    perms = openai_client.fine_tuning.checkpoints.permissions
    [permission] = perms.create(name, project_ids=[tenants[0].id]).data
    with pytest.deprecated_call():  # the client marks retrieve deprecated; it still works
        page = perms.retrieve(name)
    assert ([p.id for p in page.data], page.has_more) == ([permission.id], False)
    assert (page.first_id, page.last_id) == (permission.id, permission.id)


def test_an_unknown_cursor_is_a_400(http: httpx.Client, trained: Trained) -> None:
    r = http.get(f"/v1/fine_tuning/checkpoints/{trained.checkpoints[4]}/permissions",
                 params={"after": "cp_nope"})
    assert error_of(r, 400)["param"] == "after"


def test_an_unknown_order_is_a_400(http: httpx.Client, trained: Trained) -> None:
    r = http.get(f"/v1/fine_tuning/checkpoints/{trained.checkpoints[4]}/permissions",
                 params={"order": "sideways"})
    assert error_of(r, 400)["param"] == "order"
