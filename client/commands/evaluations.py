"""`paec eval ...` (evaluate a model on datasets: avg@k, pass@k, maj@k) and
`paec graders run ...` (grade one sample with a grader)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from client.inputs import UsageError, load_json, parse_value
from client.output import emit, record, table
from client.sdk import Evaluation, Paec

EVAL_OPTIONS: tuple[tuple[str, type, Any, str], ...] = (
    ("--k", int, 8, "samples per problem"),
    ("--max-new-tokens", int, 64, "completion length budget"),
    ("--temperature", float, 1.0, "sampling temperature"),
    ("--top-p", float, 1.0, "nucleus sampling (1.0: off)"),
    ("--size", int, 64, "problems drawn from each built-in task (files are used whole)"),
    ("--seed", int, 0, "seeds the problems drawn and the sampling"),
)
"""(flag, type, default, help) of `paec eval`'s sampling options; the defaults are the API's
(POST /api/evaluations; tests/client/test_cli.py checks them against its OpenAPI document),
so `--help` tells what an evaluation without the flag does."""


def results_table(results: dict[str, dict[str, Any]]) -> str:
    keys = [*sorted({k for scores in results.values() for k in scores} - {"n"}), "n"]
    return table(("DATASET", *keys), [(name, *(scores.get(k) for k in keys))
                                      for name, scores in results.items()])


def elapsed(seconds: float) -> str:
    """`1m05s`, `12s`."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PollReport:
    """What `eval --wait` prints while it polls (stderr): each new status with the time
    waited, and on a terminal a line redrawn in place with the time still counting."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.tty = sys.stderr.isatty()

    def __call__(self, ev: Evaluation, waited: float) -> None:
        line = f"{ev.id} {ev.status} ({elapsed(waited)})"
        if ev.status != self.status:
            self.status = ev.status
            print(("\r\x1b[K" if self.tty else "") + line, file=sys.stderr, flush=True)
        elif self.tty:
            print("\r\x1b[K" + line, end="", file=sys.stderr, flush=True)


def cmd_eval(api: Paec, args: argparse.Namespace) -> int:
    names = [flag.removeprefix("--").replace("-", "_") for flag, *_ in EVAL_OPTIONS]
    options: dict[str, Any] = {name: getattr(args, name) for name in names}
    if args.grader:
        options["grader"] = load_json(args.grader, "grader file")
    ev = api.evaluate(args.model, args.dataset, **options)
    if args.wait:
        report = PollReport()
        report(ev, 0.0)
        ev = api.wait_evaluation(ev.id, interval=args.interval, on_poll=report)
        if ev.status != "succeeded":
            err = ev.error or {}
            print(f"{ev.id} {ev.status}: {err.get('message')} (code {err.get('code')})",
                  file=sys.stderr)
            return 1
    else:
        print(f"{ev.id} {ev.status}", file=sys.stderr)
    obj = api.get_evaluation(ev.id) if args.json else {}
    emit(args, obj, lambda: results_table(ev.results) if ev.results
         else record([("id", ev.id), ("status", ev.status), ("model", ev.model),
                      ("datasets", ", ".join(ev.datasets)), ("k", ev.k)]))
    return 0


def cmd_graders_run(api: Paec, args: argparse.Namespace) -> int:
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
