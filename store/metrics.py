"""Per-step metric series of a job, and the counts the Prometheus scrape reports.

Written by the worker once per training step (`record_metrics`), read by the native routes
(`/api/jobs/{id}/metrics`, JSON or CSV) and by the worker for the job's CSV result file.
Rows are keyed (job_id, name, step), so a replayed step writes nothing twice and every read
below is a range scan of that primary key.

- Non-finite values (nan, +-inf) are skipped when recorded: JSON cannot carry them, and a
  missing point says "no value" more honestly than a made-up number.
- Downsampling keeps at most `max_points` actual points per name, evenly spaced by rank
  within the requested step range, always including the first and the last (the LTTB idea
  without its triangle areas; TensorBoard samples points rather than averaging them too).
  Values are never averaged, so every point shown was logged; a spike between two kept
  points can be hidden, and a narrower step range shows it. The selection runs in SQL (a
  window over the primary-key range), so at most `max_points` rows per name leave the
  database.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import ids
from store.errors import InvalidRequestError, NotFoundError
from store.events import event_object, events_since
from store.models import Evaluation, Job, Metric
from store.states import JobStatus

MAX_POINTS_LIMIT = 10_000
"""The largest `max_points` a caller may ask for."""
DEFAULT_MAX_POINTS = 1_000
"""Points per name when the JSON route is not told (enough for a chart of any width)."""
MAX_NAME_LENGTH = 128
"""Metric.name's column width."""
MAX_STEP = 2**31 - 1
"""The largest value of Metric.step's INTEGER column: a range bound past it is refused
before it reaches the database (Postgres answered it with an error)."""

Series = dict[str, list[tuple[int, float]]]


def record_metrics(session: Session, job_id: str, step: int,
                   values: Mapping[str, float]) -> None:
    """Store one value per name at `step`; a (job, name, step) already stored is left as it
    was (the first write wins), and non-finite values are skipped (see the module doc)."""
    for name in values:
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidRequestError(f"metric names must be 1-{MAX_NAME_LENGTH} characters, "
                                      f"got {name!r}", param="name")
    rows = [{"job_id": job_id, "name": name, "step": step, "value": float(value)}
            for name, value in values.items() if math.isfinite(value)]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(Metric).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "name", "step"]))


def require_job(session: Session, tenant_id: str, job_id: str) -> None:
    """NotFoundError unless `job_id` is a job of `tenant_id` (anyone else's is 404, never
    403). Reads the id alone: these routes need no column of the job itself."""
    found = session.scalar(select(Job.id).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if found is None:
        raise NotFoundError(f"no fine-tuning job {job_id!r}", param="job_id")


def metric_names(session: Session, job_id: str) -> list[str]:
    """The job's metric names, sorted.

    A loose index scan (a recursive query that jumps from one name to the next along the
    primary key) rather than DISTINCT, which would read every (name, step) row of the job:
    this costs one index probe per name on Postgres and SQLite alike."""
    first = select(func.min(Metric.name).label("name")).where(Metric.job_id == job_id)
    names = first.cte("names", recursive=True)
    following = (select(func.min(Metric.name)).where(Metric.job_id == job_id,
                                                      Metric.name > names.c.name)
                 .scalar_subquery())
    names = names.union_all(select(following).where(names.c.name.is_not(None)))
    return [name for name in session.scalars(select(names.c.name)) if name is not None]


def check_range(start_step: int | None, end_step: int | None, max_points: int | None) -> None:
    """InvalidRequestError naming the parameter when a range or point count is invalid."""
    for value, param in ((start_step, "start"), (end_step, "end")):
        if value is not None and not 0 <= value <= MAX_STEP:
            raise InvalidRequestError(f"{param} must be a step in [0, {MAX_STEP}], got "
                                      f"{str(value)[:40]}", param=param)
    if start_step is not None and end_step is not None and start_step > end_step:
        raise InvalidRequestError(f"start ({start_step}) must not be after end ({end_step})",
                                  param="start")
    if max_points is not None and not 2 <= max_points <= MAX_POINTS_LIMIT:
        raise InvalidRequestError(f"max_points must be in [2, {MAX_POINTS_LIMIT}], "
                                  f"got {max_points}", param="max_points")


def resolve_names(session: Session, job_id: str, names: Sequence[str] | None) -> list[str]:
    """`names` (de-duplicated, in the caller's order), or every name of the job when None;
    InvalidRequestError listing the names the job never logged."""
    known = metric_names(session, job_id)
    if names is None:
        return known
    wanted = list(dict.fromkeys(names))
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise InvalidRequestError(f"unknown metric names: {', '.join(unknown)}; this job "
                                  f"logs {len(known)} names (GET .../metrics/names)",
                                  param="names")
    return wanted


def metric_series(session: Session, job_id: str, names: Sequence[str], *,
                  start_step: int | None = None, end_step: int | None = None,
                  max_points: int | None = None) -> Series:
    """{name: [(step, value), ...]} for `names` over [start_step, end_step] (inclusive),
    steps ascending, at most `max_points` per name (see the module doc); every name of
    `names` is a key, with an empty list when it has no point in the range."""
    check_range(start_step, end_step, max_points)
    out: Series = {name: [] for name in names}
    if not names:
        return out
    where = [Metric.job_id == job_id, Metric.name.in_(list(names))]
    if start_step is not None:
        where.append(Metric.step >= start_step)
    if end_step is not None:
        where.append(Metric.step <= end_step)
    if max_points is None:
        query = select(Metric.name, Metric.step, Metric.value).where(*where)
    else:
        window = (select(Metric.name, Metric.step, Metric.value,
                         (func.row_number().over(partition_by=Metric.name,
                                                 order_by=Metric.step) - 1).label("i"),
                         func.count().over(partition_by=Metric.name).label("n"))
                  .where(*where).subquery())
        # Keep rank i of n when i * (m - 1) // (n - 1) exceeds its predecessor's: exactly m
        # ranks, i = 0 and i = n - 1 among them, evenly spaced (integer arithmetic, so
        # Postgres and SQLite agree).
        m1 = literal(max_points - 1)
        query = (select(window.c.name, window.c.step, window.c.value)
                 .where((window.c.n <= max_points)
                        | ((window.c.i * m1) % (window.c.n - 1) < m1)))
    for name, step, value in session.execute(query.order_by("name", "step")):
        out[name].append((step, value))
    return out


def job_series(session: Session, tenant_id: str, job_id: str, names: Sequence[str] | None,
               *, start_step: int | None = None, end_step: int | None = None,
               max_points: int | None = None) -> Series:
    """`metric_series` of the tenant's job, every name unless `names`; checks the job's owner
    (404), the range and the names (400 listing the unknown ones), in that order."""
    require_job(session, tenant_id, job_id)
    check_range(start_step, end_step, max_points)
    wanted = resolve_names(session, job_id, names)
    return metric_series(session, job_id, wanted, start_step=start_step, end_step=end_step,
                         max_points=max_points)


def job_metric_names(session: Session, tenant_id: str, job_id: str) -> list[str]:
    """`metric_names` of the tenant's job (404 for anyone else's)."""
    require_job(session, tenant_id, job_id)
    return metric_names(session, job_id)


def series_object(job_id: str, series: Series) -> dict[str, Any]:
    """The JSON shape of `GET /api/jobs/{id}/metrics`."""
    return {"object": "metrics", "job_id": job_id, "names": list(series),
            "series": {name: {"steps": [s for s, _ in points], "values": [v for _, v in points]}
                       for name, points in series.items()}}


def series_csv(series: Series) -> str:
    """`step,name1,name2,...`: one row per step that any name has, ascending; a name without
    a value at that step leaves its cell empty."""
    columns = list(series)
    rows: dict[int, dict[str, float]] = {}
    for name, points in series.items():
        for step, value in points:
            rows.setdefault(step, {})[name] = value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *columns])
    for step in sorted(rows):
        cells = rows[step]
        writer.writerow([step, *(repr(cells[c]) if c in cells else "" for c in columns)])
    return buffer.getvalue()


def metrics_csv(session: Session, job_id: str, names: Sequence[str] | None = None, *,
                start_step: int | None = None, end_step: int | None = None,
                max_points: int | None = None) -> str:
    """The job's metrics as CSV (see `series_csv`), every name unless `names`, full
    resolution unless `max_points` (the worker writes this as the job's result file)."""
    wanted = resolve_names(session, job_id, names)
    return series_csv(metric_series(session, job_id, wanted, start_step=start_step,
                                    end_step=end_step, max_points=max_points))


def stream_poll(session: Session, job_id: str, after_seq: int, *, limit: int = 500
                ) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """One poll of the SSE stream: ([(seq, event object), ...] oldest first, job status).

    The status is read before the events: under READ COMMITTED each statement sees what was
    committed before it started, so when the status read is terminal, the events read next
    include every event committed before the job ended, and the stream may close once this
    batch (if shorter than `limit`) is sent."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status is None:  # deleted while streaming (tenant removal): end the stream
        return [], JobStatus.CANCELLED.value
    events = events_since(session, job_id, after_seq=after_seq, limit=limit)
    return [(e.seq, event_object(e)) for e in events], status


def parse_event_cursor(value: str | None, param: str) -> int:
    """The seq after which a stream resumes: 0 for None, else the seq of an event id."""
    if value is None or value == "":
        return 0
    seq = ids.event_seq(value.strip())
    if seq is None:
        raise InvalidRequestError(f"{param} must be an event id like 'ftevent-12', got "
                                  f"{value!r}", param=param)
    return seq


def stream_start(session: Session, tenant_id: str, job_id: str, *,
                 last_event_id: str | None, after: str | None) -> int:
    """The seq after which the stream of the tenant's job starts (NotFoundError for anyone
    else's job). `Last-Event-ID` wins over `?after`: a reconnecting EventSource repeats the
    original URL (and its `after`) and sends the id it last received in the header."""
    if last_event_id:
        after_seq = parse_event_cursor(last_event_id, "Last-Event-ID")
    else:
        after_seq = parse_event_cursor(after, "after")
    require_job(session, tenant_id, job_id)
    return after_seq


def _counts(rows: Iterable[Any]) -> dict[str, int]:
    return {str(status): int(count) for status, count in rows}


def jobs_by_status(session: Session) -> dict[str, int]:
    """Jobs per status over every tenant (every JobStatus present, zeros included)."""
    counts = dict.fromkeys((s.value for s in JobStatus), 0)
    counts.update(_counts(session.execute(
        select(Job.status, func.count()).group_by(Job.status))))
    return counts


def evaluations_by_status(session: Session) -> dict[str, int]:
    """Evaluations per status over every tenant (statuses with no row are absent)."""
    return _counts(session.execute(
        select(Evaluation.status, func.count()).group_by(Evaluation.status)))
