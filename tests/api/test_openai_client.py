"""The fine-tuning jobs API driven end to end by the official `openai` client, the judge of
compatibility (docs/openai.md 1-5): upload, create with PAEC extensions, list and page,
retrieve, pause/resume/cancel (repeated), events, the error classes, idempotency keys, and
the client's own retry of a create whose first response was lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from store.db import transaction
from store.models import Job
from tests.service import ThreadedServer, make_file, new_tenant_key

ROWS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(4)]
MATH = {"type": "math_verify", "name": "correct", "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}"}
HYPER = {"n_epochs": 1, "batch_size": 2, "group_size": 4,
         "paec": {"quantile": 0.7, "anchor_steps": 1}}


def method(hyperparameters: dict[str, Any] | None = None) -> Any:
    return {"type": "reinforcement",
            "reinforcement": {"grader": MATH, "hyperparameters": hyperparameters or HYPER}}


@pytest.fixture
def training_file(sessions: sessionmaker[Session], tenant: tuple[str, str]) -> str:
    return make_file(sessions, tenant[0], rows=4)


def new_job(client: OpenAI, training_file: str, **kwargs: Any) -> Any:
    return client.fine_tuning.jobs.create(model="builtin:smollm2-135m-instruct",
                                          training_file=training_file, method=method(),
                                          **kwargs)


def job_count(sessions: sessionmaker[Session], tenant_id: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)
                                  .where(Job.tenant_id == tenant_id)) or 0)


def set_status(sessions: sessionmaker[Session], job_id: str, status: str) -> None:
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_upload_then_create_echoes_the_effective_hyperparameters(
        openai_client: OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    with path.open("rb") as f:
        uploaded = openai_client.files.create(file=f, purpose="fine-tune")
    job = openai_client.fine_tuning.jobs.create(
        model="builtin:smollm2-135m-instruct", training_file=uploaded.id,
        method=method(), suffix="paec", metadata={"exp": "e2e"})
    assert job.status == "queued"
    assert job.training_file == uploaded.id
    assert job.hyperparameters.batch_size == 2 and job.hyperparameters.n_epochs == 1
    assert job.method is not None and job.method.reinforcement is not None
    echoed = job.method.reinforcement.hyperparameters
    assert echoed is not None
    extra = echoed.model_extra or {}
    assert extra["group_size"] == 4
    assert extra["paec"]["quantile"] == 0.7
    assert extra["paec"]["top_p"] == 0.9  # an extension's default, echoed
    assert extra["steps"] == 2  # ceil(1 epoch * 4 rows / 2 prompts per step)
    assert openai_client.fine_tuning.jobs.retrieve(job.id) == job


def test_list_pages_newest_first_with_after_and_limit(openai_client: OpenAI,
                                                      training_file: str) -> None:
    ids = [new_job(openai_client, training_file).id for _ in range(3)]
    page = openai_client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == ids[::-1][:2]
    assert page.has_more is True
    rest = openai_client.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert [j.id for j in rest.data] == [ids[0]] and rest.has_more is False
    assert [j.id for j in openai_client.fine_tuning.jobs.list(limit=1)] == ids[::-1]


def test_list_filters_by_metadata(openai_client: OpenAI, training_file: str) -> None:
    wanted = new_job(openai_client, training_file, metadata={"exp": "a", "team": "x"})
    new_job(openai_client, training_file, metadata={"exp": "b"})
    new_job(openai_client, training_file)
    found = openai_client.fine_tuning.jobs.list(metadata={"exp": "a"})
    assert [j.id for j in found.data] == [wanted.id]
    both = openai_client.fine_tuning.jobs.list(metadata={"exp": "a", "team": "y"})
    assert both.data == []


def test_pause_resume_cancel_and_their_repeats(openai_client: OpenAI,
                                               training_file: str) -> None:
    jobs = openai_client.fine_tuning.jobs
    job = new_job(openai_client, training_file)
    paused = jobs.pause(job.id)
    assert paused.status == "paused"
    assert jobs.pause(job.id) == paused
    resumed = jobs.resume(job.id)
    assert resumed.status == "queued"
    assert jobs.resume(job.id) == resumed
    cancelled = jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert jobs.cancel(job.id) == cancelled
    messages = [e.message for e in jobs.list_events(job.id, limit=3)]
    assert messages[:3] == ["Job cancelled", "Job resumed", "Job paused"]


def test_events_page_newest_first(openai_client: OpenAI, training_file: str) -> None:
    job = new_job(openai_client, training_file)
    first = openai_client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert [e.message for e in first.data] == [
        "Job queued", f"Validated training file {training_file} (4 rows)"]
    assert first.has_more is True
    rest = openai_client.fine_tuning.jobs.list_events(job.id, limit=2, after=first.data[-1].id)
    assert [e.message for e in rest.data] == [f"Created fine-tuning job {job.id}"]
    assert rest.has_more is False
    every = list(openai_client.fine_tuning.jobs.list_events(job.id, limit=1))
    assert len(every) == 3 and all(e.object == "fine_tuning.job.event" for e in every)


def test_a_bad_hyperparameter_is_a_bad_request_naming_it(openai_client: OpenAI,
                                                         training_file: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.fine_tuning.jobs.create(
            model="builtin:smollm2-135m-instruct", training_file=training_file,
            method=method({"paec": {"floor_ratio": 2.0}}))
    assert info.value.param == "method.reinforcement.hyperparameters.paec.floor_ratio"
    assert info.value.code == "invalid_request"
    assert "floor_ratio" in info.value.message


def test_an_unknown_model_is_model_not_found(openai_client: OpenAI,
                                             training_file: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file,
                                              method=method())
    assert (info.value.code, info.value.param) == ("model_not_found", "model")


def test_another_tenants_job_is_not_found(openai_client: OpenAI, server: str,
                                          sessions: sessionmaker[Session]) -> None:
    other_id, other_key = new_tenant_key(sessions)
    other = OpenAI(base_url=server + "/v1", api_key=other_key, max_retries=0)
    job = new_job(other, make_file(sessions, other_id))
    for call in (openai_client.fine_tuning.jobs.retrieve, openai_client.fine_tuning.jobs.cancel,
                 openai_client.fine_tuning.jobs.list_events):
        with pytest.raises(openai.NotFoundError):
            call(job.id)
    assert other.fine_tuning.jobs.retrieve(job.id).status == "queued"


def test_cancelling_a_finished_job_is_a_conflict(openai_client: OpenAI, training_file: str,
                                                 sessions: sessionmaker[Session]) -> None:
    job = new_job(openai_client, training_file)
    set_status(sessions, job.id, "succeeded")
    with pytest.raises(openai.ConflictError) as info:
        openai_client.fine_tuning.jobs.cancel(job.id)
    assert info.value.code == "invalid_state"
    assert info.value.response.headers["x-should-retry"] == "false"


def test_an_idempotency_key_sent_through_the_client_creates_one_job(
        openai_client: OpenAI, training_file: str, tenant: tuple[str, str],
        sessions: sessionmaker[Session]) -> None:
    headers = {"Idempotency-Key": "client-key-1"}
    first = new_job(openai_client, training_file, extra_headers=headers)
    again = new_job(openai_client, training_file, extra_headers=headers)
    assert again == first
    assert job_count(sessions, tenant[0]) == 1
    with pytest.raises(openai.ConflictError) as info:
        new_job(openai_client, training_file, extra_headers=headers, seed=5)
    assert info.value.code == "idempotency_key_reused"


class LoseFirstCreate:
    """ASGI wrapper: the first POST /v1/fine_tuning/jobs runs in full (the job is committed),
    but its response is replaced by a 502, as a proxy that lost the upstream reply would;
    everything else passes through."""

    def __init__(self, app: FastAPI) -> None:
        self.app, self.lost = app, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the wrapped app's own server owns its lifespan
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.lost or scope["method"] != "POST" or scope["path"] != "/v1/fine_tuning/jobs":
            await self.app(scope, receive, send)
            return
        self.lost = True

        async def swallow(message: Message) -> None:
            pass

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 502,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"bad gateway"})


@pytest.fixture
def lossy_server(app: FastAPI, server: str) -> Iterator[tuple[str, LoseFirstCreate]]:
    wrapper = LoseFirstCreate(app)
    with ThreadedServer(wrapper) as running:  # type: ignore[arg-type]
        yield running.url, wrapper


def test_the_clients_retry_of_a_lost_create_returns_the_first_job(
        lossy_server: tuple[str, LoseFirstCreate], api_key: str, training_file: str,
        tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    url, wrapper = lossy_server
    client = OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=2)
    response = client.fine_tuning.jobs.with_raw_response.create(
        model="builtin:smollm2-135m-instruct", training_file=training_file, method=method())
    assert wrapper.lost  # the first attempt did reach the server and create a job
    assert response.retries_taken == 1
    assert response.headers["Idempotent-Replayed"] == "true"
    assert job_count(sessions, tenant[0]) == 1
    assert response.parse().status == "queued"
