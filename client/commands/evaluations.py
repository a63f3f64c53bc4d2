"""`paec eval ...` (evaluate a model on datasets: avg@k, pass@k, maj@k) and
`paec graders run ...` (grade one sample with a grader)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from client.http import Client
from client.inputs import UsageError, load_json, parse_value
from client.output import emit, record, table


def results_table(results: dict[str, dict[str, Any]]) -> str:
    keys = [*sorted({k for scores in results.values() for k in scores} - {"n"}), "n"]
    return table(("DATASET", *keys), [(name, *(scores.get(k) for k in keys))
                                      for name, scores in results.items()])


def cmd_eval(api: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"model": args.model, "datasets": args.dataset, "k": args.k}
    for field in ("max_new_tokens", "size", "seed", "temperature"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.grader:
        body["grader"] = load_json(args.grader, "grader file")
    ev = api.create_evaluation(body)
    print(f"{ev['id']} {ev['status']}", file=sys.stderr)
    while args.wait and ev["status"] in ("queued", "running"):
        time.sleep(args.interval)
        ev = api.get_evaluation(ev["id"])
    if args.wait and ev["status"] != "succeeded":
        err = ev.get("error") or {}
        print(f"{ev['id']} {ev['status']}: {err.get('message')} (code {err.get('code')})",
              file=sys.stderr)
        return 1
    emit(args, ev, lambda: results_table(ev["results"]) if ev.get("results")
         else record([("id", ev["id"]), ("status", ev["status"]), ("model", ev["model"]),
                      ("datasets", ", ".join(ev["datasets"])), ("k", ev["k"])]))
    return 0


def cmd_graders_run(api: Client, args: argparse.Namespace) -> int:
    spec = load_json(args.grader, "grader file")
    grader = spec["grader"] if isinstance(spec.get("grader"), dict) else spec
    item = parse_value(args.item) if args.item else None
    if item is not None and not isinstance(item, dict):
        raise UsageError(f"--item must be a JSON object, got {args.item!r}")
    result = api.run_grader(grader, args.sample, item)
    errors = [k for k, v in result["metadata"]["errors"].items() if v is True]
    emit(args, result, lambda: record([
        ("reward", result["reward"]), ("sub_rewards", result["sub_rewards"]),
        ("errors", ", ".join(errors) or "none"),
        ("details", result["metadata"].get("error_details"))]))
    return 0
