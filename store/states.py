"""The fine-tuning job state machine (the OpenAI job statuses plus `paused`).

    validating_files -> queued -> running -> succeeded | failed | cancelled
                          ^           |
                          +- paused <-+

Any non-terminal state can be cancelled or fail; a paused job resumes by being queued again;
a running job whose worker died is queued again by the sweeper.
"""

from __future__ import annotations

from enum import StrEnum

from store.errors import InvalidTransitionError


class JobStatus(StrEnum):
    """Status of a fine-tuning job, as the OpenAI API spells it."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """No transition leaves a terminal state."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset({JobStatus.QUEUED, JobStatus.FAILED,
                                           JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.FAILED,
                                 JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                                  JobStatus.PAUSED, JobStatus.QUEUED}),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    """Whether `current -> target` is allowed."""
    return target in TRANSITIONS[current]


def check_transition(current: JobStatus, target: JobStatus) -> JobStatus:
    """`target` if `current -> target` is allowed, else InvalidTransitionError."""
    if not can_transition(current, target):
        raise InvalidTransitionError(f"a job that is {current} cannot become {target}")
    return target
