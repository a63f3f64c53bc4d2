"""`paec jobs ...`: submit a job from a config file, list jobs, show one with its latest
metrics, its events and metric series; cancel, pause and resume it; follow it live over
Server-Sent Events with a progress bar until it ends or pauses."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from client.http import Client
from client.inputs import key_values, load_json
from client.job_config import job_body
from client.output import ProgressBar, emit, fmt, record, table, when

STATUS_METRICS = (("reward", "reward/mean"), ("entropy", "entropy"),
                  ("masked entropy", "entropy/masked"), ("floor", "paec/floor"))
"""(label, metric name) of the latest values `jobs status` shows."""


def job_record(job: dict[str, Any], latest: dict[str, Any] | None = None) -> str:
    total = job.get("total_steps") or 0
    pairs: list[tuple[str, Any]] = [
        ("id", job["id"]), ("status", job["status"]), ("model", job["model"]),
        ("step", f"{job.get('step') or 0}/{total}"), ("training_file", job["training_file"]),
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


def cmd_jobs_submit(api: Client, args: argparse.Namespace) -> int:
    config = load_json(args.config, "job config")
    body = job_body(api, config, Path(args.config).resolve().parent, args.set or [])
    key = args.idempotency_key or str(uuid.uuid4())
    print(f"idempotency key {key} (to retry this submit: --idempotency-key {key})",
          file=sys.stderr)
    job = api.create_job(body, key)
    emit(args, job, lambda: job_record(job))
    return 0


def cmd_jobs_list(api: Client, args: argparse.Namespace) -> int:
    metadata = key_values(args.metadata or [], "--metadata")
    obj = api.list_jobs(args.limit, metadata)
    emit(args, obj, lambda: table(
        ("ID", "STATUS", "MODEL", "STEP", "CREATED", "FINE-TUNED MODEL"),
        [(j["id"], j["status"], j["model"], f"{j.get('step') or 0}/{j.get('total_steps')}",
          when(j["created_at"]), j.get("fine_tuned_model")) for j in obj["data"]])
        if obj["data"] else "no jobs")
    return 0


def latest_metrics(api: Client, job_id: str) -> dict[str, float]:
    """The newest value of each STATUS_METRICS name the job has logged."""
    names = set(api.metric_names(job_id))
    wanted = [name for _, name in STATUS_METRICS if name in names]
    if not wanted:
        return {}
    # max_points=2 keeps the first and the last point of each series: the newest is last.
    series = api.metrics(job_id, wanted, max_points=2)["series"]
    return {name: s["values"][-1] for name, s in series.items() if s["values"]}


def cmd_jobs_status(api: Client, args: argparse.Namespace) -> int:
    job = api.get_job(args.id)
    latest = latest_metrics(api, args.id)
    emit(args, job | {"latest_metrics": latest}, lambda: job_record(job, latest))
    return 0


def cmd_jobs_events(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_events(args.id, args.limit)
    events = list(reversed(obj["data"]))  # the API lists newest first; a log reads down
    emit(args, obj, lambda: table(("CREATED", "LEVEL", "TYPE", "MESSAGE"),
                                  [(when(e["created_at"]), e["level"], e["type"],
                                    e["message"]) for e in events]) if events else "no events")
    return 0


def cmd_jobs_action(api: Client, args: argparse.Namespace) -> int:
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


def follow_stream(api: Client, args: argparse.Namespace, job: dict[str, Any]) -> str:
    """Show the job's events (a bar for its steps) until its stream ends or it pauses;
    returns the status it ended with ("paused" for a pause)."""
    bar = ProgressBar(job.get("total_steps") or 0)

    def reconnecting(last_id: str | None, exc: Exception) -> None:
        bar.say(f"(connection lost: {exc}; reconnecting after {last_id or 'the start'})")

    status = str(job["status"])
    try:
        for message in api.follow_events(args.id, after=args.after,
                                         on_reconnect=reconnecting):
            if message.event == "end":
                return str(message.data.get("status"))
            if args.json and message.comment is None:
                print(json.dumps({"id": message.id, "event": message.event,
                                  "data": message.data}), flush=True)
            data = message.data.get("data") or {}
            if message.event == "metrics" and "total_steps" in data:
                bar.update(int(data["step"]), int(data["total_steps"]), step_note(data))
            elif message.comment is None and not args.json and "trace" not in data:
                bar.say(f"{when(message.data.get('created_at'))}  {message.data['message']}")
            # A pause does not end the stream (the job may resume): ask when it may be one.
            maybe_paused = (message.comment is not None
                            or str(message.data.get("message", "")).startswith("Job paused"))
            if maybe_paused and api.get_job(args.id)["status"] == "paused":
                return "paused"
    finally:
        bar.close()
    return status


def cmd_jobs_follow(api: Client, args: argparse.Namespace) -> int:
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


def cmd_jobs_metrics(api: Client, args: argparse.Namespace) -> int:
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
