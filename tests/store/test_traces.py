"""Token traces in the database (store.traces), on a real Postgres and on the embedded
SQLite, both built by the migrations: validation, the per-job bound and its spread, replays."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import traces
from store.db import make_engine, make_sessionmaker, transaction
from store.errors import InvalidRequestError, NotFoundError
from store.models import JobTrace
from store.traces import MAX_TRACE_STEPS, record_traces, step_traces, trace_steps
from tests.service import make_job, migrate, migrated_sessions, new_tenant_key

Sessions = sessionmaker[Session]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def sessions(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sessions]:
    if request.param == "postgresql":
        with migrated_sessions("paec_traces") as made:
            yield made
        return
    url = f"sqlite:///{tmp_path_factory.mktemp('traces') / 'paec.db'}"
    migrate(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def owned(sessions: Sessions) -> tuple[str, str]:
    """(tenant id, a running job of that tenant)."""
    tenant_id = new_tenant_key(sessions)[0]
    return tenant_id, make_job(sessions, tenant_id, status="running")


def trace(n: int = 3, value: float = 1.0) -> dict[str, Any]:
    return {"tokens": [f"t{i}" for i in range(n)], "entropy": [value] * n,
            "top_p_entropy": [value / 2] * n, "mask": [1.0] * n}


def stored_steps(sessions: Sessions, job_id: str) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(JobTrace.step).where(JobTrace.job_id == job_id)
                                    .distinct().order_by(JobTrace.step)))


def test_traces_are_stored_cleaned_and_read_back_with_every_field(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    tenant_id, job_id = owned
    raw = {"tokens": ["The", " answer\x00"], "entropy": [0.123456789, 2.0],
           "top_p_entropy": [math.nan, 1.5], "mask": [None, 0.25], "nucleus_size": [3, None],
           "unknown": "left out"}
    with transaction(sessions) as session:
        written = record_traces(session, job_id, 1, [raw, trace()])
    assert written.stored == [0, 1] and written.dropped == {}
    with sessions() as session:
        body = step_traces(session, tenant_id, job_id, 1)
    assert (body["object"], body["job_id"], body["step"]) == ("traces", job_id, 1)
    first = body["samples"][0]
    assert first == {"index": 0, "prompt": None, "advantage": None,
                     "tokens": ["The", " answer\ufffd"],
                     "entropy": [0.123457, 2.0], "top_p_entropy": [None, 1.5],
                     "mask": [None, 0.25], "nucleus_size": [3, None],
                     "top_two_gap": [None, None]}
    assert [s["index"] for s in body["samples"]] == [0, 1]


@pytest.mark.parametrize("bad", [
    {"tokens": ["a", "b"], "entropy": [1.0]},  # unequal lengths
    {"tokens": ["a"], "entropy": ["1.0"]},  # a string for a number
    {"tokens": ["a"], "entropy": [True]},  # a bool is not a number
    {"tokens": ["a"]},  # no entropy
    {"tokens": [1], "entropy": [1.0]},  # a token that is not text
    {"tokens": ["a"], "entropy": [1.0], "nucleus_size": [1.5]},  # not an integer
    {"tokens": ["x" * 1000], "entropy": [1.0]},  # not one token
    {"tokens": ["a"] * (traces.MAX_TRACE_TOKENS + 1),
     "entropy": [1.0] * (traces.MAX_TRACE_TOKENS + 1)},
    ["not", "an", "object"],
])
def test_an_invalid_trace_is_dropped_with_its_reason_and_the_others_kept(
        sessions: Sessions, owned: tuple[str, str], bad: Any) -> None:
    tenant_id, job_id = owned
    with transaction(sessions) as session:
        written = record_traces(session, job_id, 1, [trace(), bad, trace()])
    assert written.stored == [0, 2] and list(written.dropped) == [1]
    with sessions() as session:
        samples = step_traces(session, tenant_id, job_id, 1)["samples"]
    assert [s["index"] for s in samples] == [0, 2]


def test_a_step_keeps_at_most_the_per_step_number_of_samples(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    n = traces.MAX_SAMPLES_PER_STEP + 3
    with transaction(sessions) as session:
        written = record_traces(session, owned[1], 1, [trace(1)] * n)
    assert len(written.stored) == traces.MAX_SAMPLES_PER_STEP
    assert sorted(written.dropped) == list(range(traces.MAX_SAMPLES_PER_STEP, n))


def test_a_replayed_step_writes_nothing_twice_and_the_first_write_wins(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    tenant_id, job_id = owned
    for value in (1.0, 9.0):  # a resumed job samples step 2 again
        with transaction(sessions) as session:
            record_traces(session, job_id, 1, [trace()])
            record_traces(session, job_id, 2, [trace(value=value), trace(value=value)])
    with sessions() as session:
        count = session.scalar(select(func.count()).select_from(JobTrace)
                               .where(JobTrace.job_id == job_id))
        body = step_traces(session, tenant_id, job_id, 2)
    assert count == 3
    assert body["samples"][0]["entropy"] == [1.0, 1.0, 1.0]


def test_thinning_keeps_the_bound_and_spreads_the_steps_over_the_whole_run(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    job_id, last = owned[1], 1000
    with transaction(sessions) as session:
        for step in range(1, last + 1):
            record_traces(session, job_id, step, [trace(1)])
            if step % 97 == 0:  # the bound holds all along, not only at the end
                count = session.scalar(select(func.count(func.distinct(JobTrace.step)))
                                       .where(JobTrace.job_id == job_id))
                assert count is not None and count <= MAX_TRACE_STEPS
    steps = stored_steps(sessions, job_id)
    assert MAX_TRACE_STEPS // 2 <= len(steps) <= MAX_TRACE_STEPS
    assert (steps[0], steps[-1]) == (1, last)  # the first and the newest step
    # evenly spread: one stride between all stored steps but the newest
    gaps = {b - a for a, b in itertools.pairwise(steps[:-1])}
    assert len(gaps) == 1 and gaps.pop() <= 2 * last // MAX_TRACE_STEPS + 1


def test_thinning_with_a_small_bound_doubles_the_stride(
        sessions: Sessions, owned: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traces, "MAX_TRACE_STEPS", 5)
    job_id = owned[1]
    seen = []
    with transaction(sessions) as session:
        for step in range(1, 11):
            record_traces(session, job_id, step, [trace(1)])
            seen.append(list(session.scalars(select(JobTrace.step).distinct()
                                             .where(JobTrace.job_id == job_id)
                                             .order_by(JobTrace.step))))
    assert seen[3] == [1, 2, 3, 4]
    assert seen[4] == [1, 3, 5]  # a fifth grid point is one too many: the stride doubles
    assert seen[5] == [1, 3, 5, 6]  # the newest step is kept besides the grid
    assert seen[7] == [1, 3, 5, 7, 8]
    assert seen[8] == [1, 5, 9]  # and doubles again
    assert seen[9] == [1, 5, 9, 10]
    assert all(len(s) <= 5 and s[0] == 1 for s in seen)


def test_a_replayed_step_that_was_thinned_away_is_not_stored_again(
        sessions: Sessions, owned: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traces, "MAX_TRACE_STEPS", 5)
    job_id = owned[1]
    with transaction(sessions) as session:
        for step in range(1, 11):
            record_traces(session, job_id, step, [trace(1)])
    before = stored_steps(sessions, job_id)
    with transaction(sessions) as session:  # a job resumed from its step-6 checkpoint
        for step in range(7, 11):
            written = record_traces(session, job_id, step, [trace(1)])
            assert written.thinned == (step not in before)
    assert stored_steps(sessions, job_id) == before


def test_the_steps_list_is_ascending_and_the_newest_step_is_the_default(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    tenant_id, job_id = owned
    with transaction(sessions) as session:
        for step in (1, 3, 2):  # 2 arrives late (a replay), on the grid
            record_traces(session, job_id, step, [trace()])
    with sessions() as session:
        assert trace_steps(session, tenant_id, job_id) == [1, 2, 3]
        assert step_traces(session, tenant_id, job_id, None)["step"] == 3


def test_another_tenant_s_job_unknown_steps_and_bad_steps_are_refused(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    tenant_id, job_id = owned
    other = new_tenant_key(sessions)[0]
    with transaction(sessions) as session:
        record_traces(session, job_id, 1, [trace()])
    with sessions() as session:
        for call in (lambda: trace_steps(session, other, job_id),
                     lambda: step_traces(session, other, job_id, 1)):
            with pytest.raises(NotFoundError) as found:
                call()
            assert found.value.param == "job_id"
        with pytest.raises(NotFoundError) as missing:
            step_traces(session, tenant_id, job_id, 2)
        assert missing.value.param == "step"
        with pytest.raises(InvalidRequestError) as bad:
            step_traces(session, tenant_id, job_id, -1)
        assert bad.value.param == "step"


def test_a_job_without_traces_has_no_steps_and_no_default_step(
        sessions: Sessions, owned: tuple[str, str]) -> None:
    tenant_id, job_id = owned
    with sessions() as session:
        assert trace_steps(session, tenant_id, job_id) == []
        with pytest.raises(NotFoundError) as missing:
            step_traces(session, tenant_id, job_id, None)
    assert missing.value.param == "step"


def test_the_prompt_keeps_its_end_and_the_advantage_is_a_finite_number_or_null() -> None:
    base = {"tokens": ["a"], "entropy": [0.5]}
    long = "x" * traces.MAX_PROMPT_CHARS + "What is 2 + 2?\x00"
    cleaned = traces.clean_trace({**base, "prompt": long, "advantage": -0.1234567})
    assert len(cleaned["prompt"]) == traces.MAX_PROMPT_CHARS
    assert cleaned["prompt"].endswith("What is 2 + 2?\ufffd")
    assert cleaned["advantage"] == -0.123457
    assert traces.clean_trace({**base, "advantage": math.nan})["advantage"] is None
    assert "prompt" not in traces.clean_trace(base)
    for bad in ({"prompt": 3}, {"advantage": "high"}):
        with pytest.raises(traces.InvalidTrace):
            traces.clean_trace({**base, **bad})
