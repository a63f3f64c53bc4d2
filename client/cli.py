"""`paec`: the command-line client of the paec training service (docs/cli.md).

The API's URL and key come from --api-url/--api-key or PAEC_API_URL/PAEC_API_KEY. Every
command prints a readable table or record, or the API's JSON with --json. A failure prints
the API's message with its code and param (or the URL that could not be reached) and exits
1. Progress bars go to stderr, redrawn in place only when stderr is a terminal. A job config
(job.json) names a model, a training file and a grader: docs/cli.md shows one, and how to
write train.jsonl from a built-in task.

examples:
  paec files upload train.jsonl
  paec jobs submit job.json                       # PAEC
  paec jobs submit job.json --set use_paec=false  # the GRPO baseline, same data and seed
  paec jobs follow ftjob-...
  paec jobs compare ftjob-... ftjob-...
  paec checkpoints download ftckpt_... -o model/
  paec eval ft:... --dataset builtin:add --k 4 --size 16 --wait
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from client.commands import checkpoints, evaluations, files, jobs
from client.http import KEY_ENV, URL_ENV, ClientError
from client.inputs import UsageError
from client.sdk import COMPARE_METRICS, Paec

Handler = Callable[[Paec, argparse.Namespace], int]
"""A command: runs against the API, prints, returns the exit code."""
Leaf = Callable[..., argparse.ArgumentParser]
"""Adds one command (subparsers, name, handler, help[, epilog]) that takes the common
options."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks, and appends "(default: X)" to every option that has
    a default and does not say it already (argparse.ArgumentDefaultsHelpFormatter would
    print "(default: None)" for options whose default is the server's)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default is not None
                and action.default is not False and action.default != argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def examples(*lines: str) -> str:
    """An epilog of example command lines (tests/client/test_cli_help.py runs each one)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# ---- the parser ----

def common_options() -> argparse.ArgumentParser:
    """The options every leaf command takes: where the API is, and how to print."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help=f"the API's base URL (default ${URL_ENV}, else "
                        "http://127.0.0.1:8000)")
    common.add_argument("--api-key", help=f"the API key (default ${KEY_ENV})")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    return common


def leaf_adder(common: argparse.ArgumentParser) -> Leaf:
    def leaf(sub: Any, name: str, handler: Handler, help_: str,
             epilog: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help_, description=textwrap.fill(help_, 88),
            epilog=epilog,
            formatter_class=HelpFormatter)
        p.set_defaults(handler=handler)
        return p
    return leaf


def add_files(groups: Any, leaf: Leaf) -> None:
    group = groups.add_parser("files", help="datasets").add_subparsers(metavar="ACTION")
    p = leaf(group, "upload", files.cmd_files_upload, "upload a JSONL dataset")
    p.add_argument("path")
    p.add_argument("--purpose", default="fine-tune", help="the file's purpose")
    files.add_format_arguments(p, required=False)
    p = leaf(group, "convert", files.cmd_files_convert, "convert a public dataset's layout "
             "into paec's rows (docs/datasets.md); needs no server")
    p.add_argument("path")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write ('-': stdout; "
                   "default: stdout)")
    files.add_format_arguments(p, required=True)
    leaf(group, "list", files.cmd_files_list, "list your files").add_argument(
        "--limit", type=int, default=100, help="files to list")
    leaf(group, "show", files.cmd_files_show, "one file").add_argument("id")
    leaf(group, "delete", files.cmd_files_delete, "delete a file").add_argument("id")


def add_job_inspection(group: Any, leaf: Leaf) -> None:
    """jobs list, status, follow, events, metrics and compare."""
    p = leaf(group, "list", jobs.cmd_jobs_list, "list your jobs, newest first")
    p.add_argument("--limit", type=int, default=20, help="jobs to list")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="only jobs whose metadata has this pair (repeatable)")
    leaf(group, "status", jobs.cmd_jobs_status,
         "a job, its method and its latest metrics").add_argument("id")
    p = leaf(group, "follow", jobs.cmd_jobs_follow,
             "live progress until the job ends or pauses (its status while it is queued, "
             "then its events and a bar of its steps)")
    p.add_argument("id")
    p.add_argument("--after", help="start after this event id (ftevent-N)")
    p = leaf(group, "events", jobs.cmd_jobs_events, "a job's latest events")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=20, help="events to show")
    p = leaf(group, "metrics", jobs.cmd_jobs_metrics, "a job's metric series")
    p.add_argument("id")
    p.add_argument("--names", help="comma-separated metric names (default: all)")
    p.add_argument("--csv", metavar="FILE", help="write the full series as CSV ('-': stdout)")
    p = leaf(group, "compare", jobs.cmd_jobs_compare,
             "jobs side by side: method, status, steps; the first, last and mean value of "
             "each metric; the in-training evaluation scores at their last step",
             examples("paec jobs compare ftjob-... ftjob-... --json"))
    p.add_argument("ids", nargs="+", metavar="JOB_ID")
    p.add_argument("--names", help="comma-separated metric names (default: "
                   + ",".join(COMPARE_METRICS) + ")")


def add_jobs(groups: Any, leaf: Leaf) -> None:
    group = groups.add_parser("jobs", help="fine-tuning jobs").add_subparsers(metavar="ACTION")
    p = leaf(group, "submit", jobs.cmd_jobs_submit,
             "create a job from a JSON config (docs/cli.md); its *_path files are uploaded "
             "first, and deleted again if the API refuses the job",
             examples("paec jobs submit job.json --set paec.quantile=0.7 "
                      "--set loss.clip_high=0.28"))
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a hyperparameter (dotted keys: paec.quantile=0.7, "
                        "use_paec=false; JSON values)")
    p.add_argument("--idempotency-key", help="reuse the key a timed-out submit printed "
                   "(default: a new uuid4)")
    add_job_inspection(group, leaf)
    for action in ("cancel", "pause", "resume"):
        p = leaf(group, action, jobs.cmd_jobs_action, f"{action} a job")
        p.add_argument("id")
        p.set_defaults(action=action)


def add_checkpoints(groups: Any, leaf: Leaf) -> None:
    group = groups.add_parser("checkpoints", help="checkpoints").add_subparsers(
        metavar="ACTION")
    leaf(group, "list", checkpoints.cmd_checkpoints_list,
         "a job's checkpoints").add_argument("job_id")
    p = leaf(group, "download", checkpoints.cmd_checkpoints_download,
             "download (resumable, sha256-checked) and unpack a checkpoint",
             examples("paec checkpoints download ftckpt_... -o model/"))
    p.add_argument("id")
    p.add_argument("-o", "--output", metavar="DIR", help="folder (default: ./CHECKPOINT_ID)")
    p.add_argument("--no-extract", action="store_true", help="keep the tar, do not unpack")
    p.add_argument("--full", action="store_true", help="the full-state archive (also the "
                   "training state a job resumes from) instead of the model only")


def add_eval(groups: Any, leaf: Leaf) -> None:
    p = leaf(groups, "eval", evaluations.cmd_eval,
             "evaluate a model on datasets (avg@k, pass@k, maj@k)",
             examples("paec eval ft:... --dataset builtin:add --k 4 --size 16 --wait"))
    p.add_argument("model", help="builtin:..., local:..., or one of your ft:... models")
    p.add_argument("--dataset", action="append", required=True,
                   help="a file id or a built-in task (builtin:add); repeatable")
    for flag, type_, default, text in evaluations.EVAL_OPTIONS:
        p.add_argument(flag, type=type_, default=default, help=text)
    p.add_argument("--grader", metavar="FILE", help="a grader JSON file (default: "
                   "math_verify, the final answer against each row's `answer`)")
    p.add_argument("--wait", action="store_true", help="print its progress until it ends, "
                   "then the results")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")


def add_graders(groups: Any, leaf: Leaf) -> None:
    group = groups.add_parser("graders", help="graders").add_subparsers(metavar="ACTION")
    p = leaf(group, "run", evaluations.cmd_graders_run, "grade one sample with a grader")
    p.add_argument("grader", metavar="GRADER.json")
    p.add_argument("--sample", required=True, help="the model's output")
    p.add_argument("--item", help="the dataset row, as a JSON object")


def build_parser() -> argparse.ArgumentParser:
    """The `paec` argument parser (every leaf command takes the common options)."""
    parser = argparse.ArgumentParser(prog="paec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    leaf = leaf_adder(common_options())
    for add in (add_files, add_jobs, add_checkpoints, add_eval, add_graders):
        add(groups, leaf)
    return parser


def command_parsers(parser: argparse.ArgumentParser, path: str = "paec"
                    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`paec jobs submit`, its parser) for the parser and every command under it, in the
    order they were added."""
    yield path, parser
    for action in parser._actions:  # argparse keeps its subcommands here, nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_parsers(sub, f"{path} {name}")


# ---- the entry point ----

def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with Paec(args.api_url, args.api_key, timeout=args.timeout) as api:
            return handler(api, args)
    except (ClientError, UsageError) as exc:
        print(f"paec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("paec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
