"""store.states: the job state machine."""

from __future__ import annotations

import itertools

import pytest

from store.errors import InvalidTransitionError
from store.states import TERMINAL, TRANSITIONS, JobStatus, can_transition, check_transition


def test_happy_path() -> None:
    path = [JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING,
            JobStatus.PAUSED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    for a, b in itertools.pairwise(path):
        assert check_transition(a, b) is b


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_are_final(state: JobStatus) -> None:
    assert state.terminal and TRANSITIONS[state] == frozenset()
    with pytest.raises(InvalidTransitionError, match=f"a job that is {state} cannot"):
        check_transition(state, JobStatus.QUEUED)


def test_every_live_state_can_be_cancelled() -> None:
    for state in JobStatus:
        assert can_transition(state, JobStatus.CANCELLED) == (not state.terminal)


def test_a_crashed_running_job_can_be_queued_again() -> None:
    assert can_transition(JobStatus.RUNNING, JobStatus.QUEUED)


def test_error_renders_the_openai_envelope() -> None:
    err = InvalidTransitionError("nope", param="job_id")
    assert err.status_code == 409
    assert err.envelope() == {"error": {"message": "nope", "type": "invalid_request_error",
                                        "param": "job_id", "code": "invalid_state"}}
