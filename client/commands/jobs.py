"""`paec jobs ...`: submit a job from a config file, list jobs (with the method each
trains), show one with its latest metrics, its events and metric series; compare jobs side
by side; cancel, pause and resume one; follow it live over Server-Sent Events (its status
while it waits in the queue, then a progress bar of its steps) until it ends or pauses."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from client.http import ClientError
from client.inputs import key_values, load_json
from client.job_config import discard, job_body
from client.output import ProgressBar, emit, fmt, record, table, when
from client.sdk import COMPARE_METRICS, Paec, RunSummary, StreamEvent, method_of

STATUS_METRICS = (("reward", "reward/mean"), ("entropy", "entropy"),
                  ("masked entropy", "entropy/masked"), ("floor", "paec/floor"))
"""(label, metric name) of the latest values `jobs status` shows."""


def job_record(job: dict[str, Any], latest: dict[str, Any] | None = None) -> str:
    total = job.get("total_steps") or 0
    pairs: list[tuple[str, Any]] = [
        ("id", job["id"]), ("status", job["status"]), ("method", method_of(job)),
        ("model", job["model"]), ("step", f"{job.get('step') or 0}/{total}"),
        ("training_file", job["training_file"]),
        ("validation_file", job.get("validation_file")),
        ("fine_tuned_model", job.get("fine_tuned_model")),
        ("created", when(job["created_at"])), ("finished", when(job.get("finished_at")))]
    if job.get("metadata"):
        pairs.append(("metadata", job["metadata"]))
    if job.get("error"):
        err = job["error"]
        pairs.append(("error", f"{err['message']} (code {err['code']}, param {err['param']})"))
    for label, name in STATUS_METRICS:
        if latest and name in latest:
            pairs.append((label, latest[name]))
    return record(pairs)


def cmd_jobs_submit(api: Paec, args: argparse.Namespace) -> int:
    config = load_json(args.config, "job config")
    body, uploaded = job_body(api, config, Path(args.config).resolve().parent,
                              args.set or [])
    key = args.idempotency_key or str(uuid.uuid4())
    print(f"idempotency key {key} (to retry this submit: --idempotency-key {key})",
          file=sys.stderr)
    try:
        job = api.create_job(body, key)
    except ClientError as exc:
        # A 4xx is a refusal: no job holds the files. Otherwise the job may exist (a lost
        # answer), so its files stay, for a retry with the same key.
        if exc.status is not None and 400 <= exc.status < 500:
            discard(api, uploaded, "the job was not created")
        elif uploaded:
            print(f"kept {', '.join(uploaded)}: the job may exist; retry with "
                  f"--idempotency-key {key} and these ids as training_file/validation_file",
                  file=sys.stderr)
        raise
    emit(args, job, lambda: job_record(job))
    return 0


def cmd_jobs_list(api: Paec, args: argparse.Namespace) -> int:
    metadata = key_values(args.metadata or [], "--metadata")
    obj = api.list_jobs(args.limit, metadata)
    emit(args, obj, lambda: table(
        ("ID", "STATUS", "METHOD", "MODEL", "STEP", "CREATED", "FINE-TUNED MODEL"),
        [(j["id"], j["status"], method_of(j), j["model"],
          f"{j.get('step') or 0}/{j.get('total_steps')}", when(j["created_at"]),
          j.get("fine_tuned_model")) for j in obj["data"]])
        if obj["data"] else "no jobs")
    return 0


def latest_metrics(api: Paec, job_id: str) -> dict[str, float]:
    """The newest value of each STATUS_METRICS name the job has logged."""
    names = set(api.metric_names(job_id))
    wanted = [name for _, name in STATUS_METRICS if name in names]
    if not wanted:
        return {}
    # max_points=2 keeps the first and the last point of each series: the newest is last.
    series = api.metrics(job_id, wanted, max_points=2)["series"]
    return {name: s["values"][-1] for name, s in series.items() if s["values"]}


def cmd_jobs_status(api: Paec, args: argparse.Namespace) -> int:
    job = api.get_job(args.id)
    latest = latest_metrics(api, args.id)
    emit(args, job | {"method_name": method_of(job), "latest_metrics": latest},
         lambda: job_record(job, latest))
    return 0


def cmd_jobs_events(api: Paec, args: argparse.Namespace) -> int:
    obj = api.list_events(args.id, args.limit)
    events = list(reversed(obj["data"]))  # the API lists newest first; a log reads down
    emit(args, obj, lambda: table(("CREATED", "LEVEL", "TYPE", "MESSAGE"),
                                  [(when(e["created_at"]), e["level"], e["type"],
                                    e["message"]) for e in events]) if events else "no events")
    return 0


def cmd_jobs_action(api: Paec, args: argparse.Namespace) -> int:
    job = api.job_action(args.id, args.action)
    emit(args, job, lambda: f"{job['id']} is {job['status']}")
    return 0


def step_note(data: dict[str, Any]) -> str:
    """reward, entropy and masked entropy vs floor of a step's metrics event data."""
    ent = data.get("entropy") or {}
    return (f"reward {fmt(data.get('train_mean_reward'))}  entropy {fmt(ent.get('full'))}  "
            f"masked {fmt(ent.get('masked'))} (floor {fmt(ent.get('floor'))})")


def print_paused(job: dict[str, Any]) -> None:
    print(f"{job['id']} is paused at step {job.get('step')}; `paec jobs resume "
          f"{job['id']}` continues it")


WAITING = ("validating_files", "queued")
"""Statuses of a job that has not started: `follow` checks the job on every event then."""


class StatusWatch:
    """The job's status as `follow` reports it: once at the start, again whenever it
    changes, and while the job waits in the queue at every keep-alive of the stream (15 s of
    silence) with the time it has waited. On stdout with the events (stderr with --json)."""

    def __init__(self, api: Paec, args: argparse.Namespace, job: dict[str, Any],
                 bar: ProgressBar) -> None:
        self.api, self.job_id, self.status = api, str(job["id"]), str(job["status"])
        self.json, self.bar, self.since = args.json, bar, time.monotonic()
        step = f" at step {job.get('step') or 0}/{job.get('total_steps')}"
        self.say(f"{self.job_id} is {self.status}"
                 + (" (waiting for a worker)" if self.status in WAITING else step))

    def say(self, text: str) -> None:
        if self.json:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.say(text)

    def check(self) -> str:
        """The job's status now (a GET), reported as above."""
        status = str(self.api.get_job(self.job_id)["status"])
        if status != self.status:
            self.say(f"{self.job_id}: {self.status} -> {status}")
            self.status, self.since = status, time.monotonic()
        elif status in WAITING:
            waited = int(time.monotonic() - self.since)
            self.say(f"{self.job_id} is still {status} ({waited} s since follow started)")
        return status


def show_event(bar: ProgressBar, args: argparse.Namespace, event: StreamEvent) -> None:
    """A step on the bar; any other event as a line (all as JSON lines with --json)."""
    if args.json:
        print(json.dumps({"id": event.id, "event": event.event, "data": event.data}),
              flush=True)
    data = event.payload
    if event.event == "metrics" and "total_steps" in data:
        bar.update(int(data["step"]), int(data["total_steps"]), step_note(data))
    elif not args.json and "trace" not in data:
        bar.say(f"{when(event.created_at)}  {event.message}")


def follow_stream(api: Paec, args: argparse.Namespace, job: dict[str, Any]) -> str:
    """Show the job's status and events (a bar for its steps) until its stream ends or it
    pauses; returns the status it ended with ("paused" for a pause)."""
    bar = ProgressBar(job.get("total_steps") or 0)

    def reconnecting(last_id: str | None, exc: Exception) -> None:
        bar.say(f"(connection lost: {exc}; reconnecting after {last_id or 'the start'})")

    watch = StatusWatch(api, args, job, bar)
    try:
        for event in api.events(args.id, after=args.after, keepalive=True,
                                on_reconnect=reconnecting):
            if event.event == "end":
                return str(event.status)
            if event.event != "keep-alive":
                show_event(bar, args, event)
            # A pause does not end the stream (the job may resume): ask when it may be one,
            # and on every event while the job has not started yet.
            if ((event.event == "keep-alive" or event.message.startswith("Job paused")
                 or watch.status in WAITING) and watch.check() == "paused"):
                return "paused"
    finally:
        bar.close()
    return watch.status


def cmd_jobs_follow(api: Paec, args: argparse.Namespace) -> int:
    job = api.get_job(args.id)
    if job["status"] == "paused":
        print_paused(job)
        return 0
    status = follow_stream(api, args, job)
    job = api.get_job(args.id)
    if status == "paused":
        print_paused(job)
        return 0
    if job["status"] == "succeeded":
        print(f"{job['id']} succeeded: {job.get('fine_tuned_model')}")
        return 0
    err = job.get("error") or {}
    detail = (f": {err.get('message')} (code {err.get('code')}, param {err.get('param')})"
              if err else "")
    print(f"{job['id']} {job['status']}{detail}", file=sys.stderr)
    return 1


def cmd_jobs_metrics(api: Paec, args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    if args.csv:
        text = api.metrics_csv(args.id, names)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            Path(args.csv).write_text(text)
            print(f"wrote {len(text.splitlines()) - 1} steps to {args.csv}", file=sys.stderr)
        return 0
    obj = api.metrics(args.id, names)
    rows = [(name, len(s["steps"]), s["steps"][-1] if s["steps"] else None,
             s["values"][-1] if s["values"] else None) for name, s in obj["series"].items()]
    emit(args, obj, lambda: table(("NAME", "POINTS", "LAST STEP", "LAST VALUE"), rows)
         if rows else "no metrics yet")
    return 0


def compare_rows(runs: list[RunSummary], names: list[str]) -> list[tuple[Any, ...]]:
    """One row per field, one column per job: method, status, step; each metric's first,
    last and mean; then the in-training evaluation's step and scores."""
    rows: list[tuple[Any, ...]] = [
        ("method", *(r.method for r in runs)), ("status", *(r.status for r in runs)),
        ("step", *(f"{r.step}/{r.total_steps}" for r in runs))]
    for name in names:
        if not any(name in r.metrics for r in runs):
            continue
        for stat in ("first", "last", "mean"):
            rows.append((f"{name} {stat}", *(getattr(r.metrics[name], stat)
                                              if name in r.metrics else None for r in runs)))
    scores = sorted({key for r in runs for key in r.evals})
    if scores:
        rows.append(("eval step", *(r.eval_step for r in runs)))
        rows += [(f"eval/{key}", *(r.evals.get(key) for r in runs)) for key in scores]
    return rows


def cmd_jobs_compare(api: Paec, args: argparse.Namespace) -> int:
    names = ([n.strip() for n in args.names.split(",") if n.strip()] if args.names
             else list(COMPARE_METRICS))
    runs = [api.summarize(job_id, names) for job_id in args.ids]
    emit(args, {"object": "comparison", "data": [r.to_dict() for r in runs]},
         lambda: table(("", *(r.job_id for r in runs)), compare_rows(runs, names)))
    return 0
