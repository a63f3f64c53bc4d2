"""`paec`: the command-line client of the paec training service (docs/cli.md).

    paec files upload train.jsonl
    paec jobs submit job.json --set paec.tau=0.5 && paec jobs follow ftjob-...
    paec checkpoints download ckpt-... -o model/

The API's URL and key come from --api-url/--api-key or PAEC_API_URL/PAEC_API_KEY. Every
command prints a readable table or record, or the API's JSON with --json. A failure prints
the API's message with its code and param (or the URL that could not be reached) and exits
1. Progress bars go to stderr, redrawn in place only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from client.http import KEY_ENV, URL_ENV, Client, ClientError

CONFIG_KEYS = ("model", "training_file", "training_path", "validation_file",
               "validation_path", "grader", "hyperparameters", "suffix", "seed", "metadata")
"""The keys of a `jobs submit` config file (docs/cli.md)."""
JOB_TERMINAL = ("succeeded", "failed", "cancelled")
STATUS_METRICS = (("reward", "reward/mean"), ("entropy", "entropy"),
                  ("masked entropy", "entropy/masked"), ("floor", "paec/floor"))
"""(label, metric name) of the latest values `jobs status` shows."""

Handler = Callable[[Client, argparse.Namespace], int]


class UsageError(Exception):
    """A command line or local file the CLI cannot use (exit 1, message as is)."""


# ---- output ----

def fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def when(ts: int | None) -> str:
    """A unix time as UTC `YYYY-MM-DD HH:MM:SS`."""
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def size(n: float) -> str:
    """Bytes in binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [list(headers), *([fmt(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def record(pairs: Sequence[tuple[str, Any]]) -> str:
    """`key  value` lines."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in pairs)


def emit(args: argparse.Namespace, obj: Any, text: Callable[[], str]) -> None:
    """The object as JSON with --json, else the readable text."""
    print(json.dumps(obj, indent=2) if args.json else text())


class ProgressBar:
    """A one-line bar on `stream` (stderr), redrawn in place on a terminal; elsewhere
    plain lines (every update for steps, every 10% for bytes)."""

    def __init__(self, total: int, *, unit: str = "steps", stream: TextIO | None = None,
                 width: int = 28) -> None:
        self.total, self.unit, self.width = total, unit, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.line, self.last_tenth = "", -1

    def _count(self, n: int) -> str:
        return size(n) if self.unit == "bytes" else str(n)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Show `done` of `total` (the last total when None) and a note after the bar."""
        self.total = total or self.total
        frac = min(done / self.total, 1.0) if self.total else 0.0
        filled = int(self.width * frac)
        self.line = (f"[{'#' * filled}{'.' * (self.width - filled)}] "
                     f"{self._count(done)}/{self._count(self.total)} {note}").rstrip()
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line)
        elif self.unit != "bytes" or int(frac * 10) > self.last_tenth:
            self.last_tenth = int(frac * 10)
            self.stream.write(self.line + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print a line to stdout without breaking the bar."""
        if self.tty and self.line:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(text, flush=True)
        if self.tty and self.line:
            self.stream.write(self.line)
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()


# ---- files ----

def file_rows(files: Sequence[dict[str, Any]]) -> str:
    return table(("ID", "FILENAME", "BYTES", "ROWS", "STATUS", "CREATED"),
                 [(f["id"], f["filename"], f["bytes"], f.get("rows"), f["status"],
                   when(f["created_at"])) for f in files])


def cmd_files_upload(api: Client, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"no file {path}")
    obj = api.upload_file(path, args.purpose)
    emit(args, obj, lambda: file_rows([obj]))
    return 0


def cmd_files_list(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_files(args.limit)
    emit(args, obj, lambda: file_rows(obj["data"]) if obj["data"] else "no files")
    return 0


def cmd_files_show(api: Client, args: argparse.Namespace) -> int:
    obj = api.get_file(args.id)
    emit(args, obj, lambda: record([(k, when(v) if k.endswith("_at") else v)
                                    for k, v in obj.items()]))
    return 0


def cmd_files_delete(api: Client, args: argparse.Namespace) -> int:
    obj = api.delete_file(args.id)
    emit(args, obj, lambda: f"deleted {obj['id']}")
    return 0


# ---- jobs ----

def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, objects), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_set(hyper: dict[str, Any], assignment: str) -> None:
    """`a.b=v`: hyper["a"]["b"] = v (parsed by parse_value), creating objects on the way."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise UsageError(f"--set takes key=value (dotted keys like paec.tau=0.5), got "
                         f"{assignment!r}")
    *parents, leaf = key.split(".")
    node = hyper
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: {part} is {child!r}, not an object")
        node = child
    node[leaf] = parse_value(value)


def load_json(path: str, what: str) -> dict[str, Any]:
    """A JSON object from a file (UsageError naming the file otherwise)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"the {what} {path} must hold a JSON object")
    return obj


def job_body(api: Client, config: dict[str, Any], base: Path, sets: Sequence[str]
             ) -> dict[str, Any]:
    """The create-job request of a config file; `*_path` datasets are uploaded first."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in the job config; it accepts "
                         + ", ".join(CONFIG_KEYS))
    body: dict[str, Any] = {k: config[k] for k in ("model", "suffix", "seed", "metadata")
                            if k in config}
    uploaded: dict[Path, str] = {}
    for kind in ("training", "validation"):
        if f"{kind}_file" in config and f"{kind}_path" in config:
            raise UsageError(f"give {kind}_file (an uploaded file id) or {kind}_path (a "
                             "local file to upload), not both")
        if f"{kind}_path" in config:
            path = (base / str(config[f"{kind}_path"])).resolve()
            if path not in uploaded:
                if not path.is_file():
                    raise UsageError(f"{kind}_path: no file {path}")
                uploaded[path] = api.upload_file(path)["id"]
                print(f"uploaded {path} as {uploaded[path]}", file=sys.stderr)
            body[f"{kind}_file"] = uploaded[path]
        elif f"{kind}_file" in config:
            body[f"{kind}_file"] = config[f"{kind}_file"]
    hyper = dict(config.get("hyperparameters") or {})
    for assignment in sets:
        apply_set(hyper, assignment)
    reinforcement: dict[str, Any] = {"hyperparameters": hyper}
    if "grader" in config:
        reinforcement["grader"] = config["grader"]
    body["method"] = {"type": "reinforcement", "reinforcement": reinforcement}
    return body


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
    metadata = {}
    for pair in args.metadata or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--metadata takes key=value, got {pair!r}")
        metadata[key] = value
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


def cmd_jobs_follow(api: Client, args: argparse.Namespace) -> int:
    job = api.get_job(args.id)
    if job["status"] == "paused":
        print(f"{job['id']} is paused at step {job.get('step')}; `paec jobs resume "
              f"{job['id']}` continues it")
        return 0
    bar = ProgressBar(job.get("total_steps") or 0)

    def reconnecting(last_id: str | None, exc: Exception) -> None:
        bar.say(f"(connection lost: {exc}; reconnecting after {last_id or 'the start'})")

    status = job["status"]
    try:
        for message in api.follow_events(args.id, after=args.after,
                                         on_reconnect=reconnecting):
            if message.event == "end":
                status = str(message.data.get("status"))
                break
            if args.json and message.comment is None:
                print(json.dumps({"id": message.id, "event": message.event,
                                  "data": message.data}), flush=True)
            data = message.data.get("data") or {}
            if message.event == "metrics" and "total_steps" in data:
                bar.update(int(data["step"]), int(data["total_steps"]), step_note(data))
            elif message.comment is None and not args.json and "trace" not in data:
                bar.say(f"{when(message.data.get('created_at'))}  {message.data['message']}")
            # A pause does not end the stream (the job may resume): ask when it may be one.
            if (message.comment is not None
                    or str(message.data.get("message", "")).startswith("Job paused")):
                job = api.get_job(args.id)
                if job["status"] == "paused":
                    status = "paused"
                    break
    finally:
        bar.close()
    job = api.get_job(args.id)
    if status == "paused":
        print(f"{job['id']} is paused at step {job.get('step')}; `paec jobs resume "
              f"{job['id']}` continues it")
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


# ---- checkpoints ----

def cmd_checkpoints_list(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_checkpoints(args.job_id)
    emit(args, obj, lambda: table(
        ("ID", "STEP", "SIZE", "SHA256", "FULL STATE", "CREATED", "MODEL"),
        [(c["id"], c["step_number"], size(c["bytes"]), c["sha256"][:12], c["full_state"],
          when(c["created_at"]), c["fine_tuned_model_checkpoint"]) for c in obj["data"]])
        if obj["data"] else "no checkpoints")
    return 0


def cmd_checkpoints_download(api: Client, args: argparse.Namespace) -> int:
    checkpoint = api.get_checkpoint(args.id)
    folder = Path(args.output or args.id)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{args.id}.tar"
    bar = ProgressBar(int(checkpoint["bytes"]), unit="bytes")
    try:
        api.download_checkpoint(args.id, archive, progress=bar.update)
    finally:
        bar.close()
    result = {"id": args.id, "sha256": checkpoint["sha256"], "bytes": checkpoint["bytes"],
              "archive": None if not args.no_extract else str(archive), "folder": str(folder)}
    if not args.no_extract:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")  # no absolute paths, links out, devices
        archive.unlink()
    where = archive if args.no_extract else f"unpacked to {folder}"
    emit(args, result, lambda: f"{args.id}: {size(checkpoint['bytes'])}, sha256 verified, "
                               f"{where}")
    return 0


# ---- evaluations and graders ----

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


# ---- the parser ----

def build_parser() -> argparse.ArgumentParser:
    """The `paec` argument parser (every leaf command takes the common options)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help=f"the API's base URL (default ${URL_ENV}, else "
                        "http://127.0.0.1:8000)")
    common.add_argument("--api-key", help=f"the API key (default ${KEY_ENV})")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser = argparse.ArgumentParser(prog="paec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")

    def leaf(sub: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_,
                                                    description=help_)
        p.set_defaults(handler=handler)
        return p

    files = groups.add_parser("files", help="datasets").add_subparsers(metavar="ACTION")
    p = leaf(files, "upload", cmd_files_upload, "upload a JSONL dataset")
    p.add_argument("path")
    p.add_argument("--purpose", default="fine-tune")
    leaf(files, "list", cmd_files_list, "list your files").add_argument(
        "--limit", type=int, default=100)
    leaf(files, "show", cmd_files_show, "one file").add_argument("id")
    leaf(files, "delete", cmd_files_delete, "delete a file").add_argument("id")

    jobs = groups.add_parser("jobs", help="fine-tuning jobs").add_subparsers(metavar="ACTION")
    p = leaf(jobs, "submit", cmd_jobs_submit, "create a job from a JSON config (docs/cli.md)")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a hyperparameter (dotted keys: paec.tau=0.5; JSON values)")
    p.add_argument("--idempotency-key", help="reuse the key a timed-out submit printed "
                   "(default: a new uuid4)")
    p = leaf(jobs, "list", cmd_jobs_list, "list your jobs, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    leaf(jobs, "status", cmd_jobs_status, "a job and its latest metrics").add_argument("id")
    p = leaf(jobs, "follow", cmd_jobs_follow, "live progress until the job ends or pauses")
    p.add_argument("id")
    p.add_argument("--after", help="start after this event id (ftevent-N)")
    p = leaf(jobs, "events", cmd_jobs_events, "a job's latest events")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=20)
    for action in ("cancel", "pause", "resume"):
        p = leaf(jobs, action, cmd_jobs_action, f"{action} a job")
        p.add_argument("id")
        p.set_defaults(action=action)
    p = leaf(jobs, "metrics", cmd_jobs_metrics, "a job's metric series")
    p.add_argument("id")
    p.add_argument("--names", help="comma-separated metric names (default: all)")
    p.add_argument("--csv", metavar="FILE", help="write the full series as CSV ('-': stdout)")

    ckpts = groups.add_parser("checkpoints", help="checkpoints").add_subparsers(
        metavar="ACTION")
    leaf(ckpts, "list", cmd_checkpoints_list, "a job's checkpoints").add_argument("job_id")
    p = leaf(ckpts, "download", cmd_checkpoints_download,
             "download (resumable, sha256-checked) and unpack a checkpoint")
    p.add_argument("id")
    p.add_argument("-o", "--output", metavar="DIR", help="folder (default: ./CHECKPOINT_ID)")
    p.add_argument("--no-extract", action="store_true", help="keep the tar, do not unpack")

    p = leaf(groups, "eval", cmd_eval, "evaluate a model on datasets (avg@k, pass@k, maj@k)")
    p.add_argument("model")
    p.add_argument("--dataset", action="append", required=True,
                   help="a file id or a built-in task (builtin:add); repeatable")
    p.add_argument("--k", type=int, default=8, help="samples per problem")
    p.add_argument("--grader", metavar="FILE", help="a grader JSON file (default math_verify)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--size", type=int, help="problems per built-in task")
    p.add_argument("--seed", type=int)
    p.add_argument("--wait", action="store_true", help="wait and print the results")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")

    graders = groups.add_parser("graders", help="graders").add_subparsers(metavar="ACTION")
    p = leaf(graders, "run", cmd_graders_run, "grade one sample with a grader")
    p.add_argument("grader", metavar="GRADER.json")
    p.add_argument("--sample", required=True, help="the model's output")
    p.add_argument("--item", help="the dataset row, as a JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with Client(args.api_url, args.api_key, timeout=args.timeout) as api:
            return handler(api, args)
    except (ClientError, UsageError) as exc:
        print(f"paec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("paec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
