"""A job's metric series (native): `GET /api/jobs/{job_id}/metrics` and its names."""

from __future__ import annotations

from typing import Literal

from api.schemas.common import Number, Wire


class Series(Wire):
    """One metric: its values at the steps it was logged, ascending."""

    steps: list[int]
    values: list[Number]


class MetricSeries(Wire):
    """Metric series of a job (downsampled to `max_points` per name)."""

    object: Literal["metrics"]
    job_id: str
    names: list[str]
    series: dict[str, Series]


class MetricNames(Wire):
    """The names a job logged, sorted."""

    object: Literal["list"]
    job_id: str
    data: list[str]


CSV_DESCRIPTION = ("With `format=csv`: `step,<name>,...`, one row per step any name has; a "
                   "name without a value at that step leaves its cell empty.")
