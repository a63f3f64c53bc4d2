"""`Paec`: a typed Python client of the paec service's native /api routes (docs/sdk.md).

    from client.sdk import Paec
    with Paec() as paec:                         # PAEC_API_URL / PAEC_API_KEY, or pass them
        for event in paec.events("ftjob-..."):   # the job's events, live, resumable
            print(event.message)
        reward = paec.job_metrics("ftjob-...", ["reward/mean"])["reward/mean"]
        print(reward.first, reward.last, reward.mean)

It is client.http.Client (one HTTP layer: the same connection handling, SSE reader and
resumable download; the `paec` command runs on it) with typed methods for the routes that
OpenAI's format cannot express: metric series, the event stream, token traces, checkpoints
and evaluations. The /v1 methods it inherits (`list_jobs`, `get_job`, `upload_file`, ...)
answer the API's JSON as dicts. Every failure raises PaecError (client.http.ClientError):
the API's error envelope as `status`, `code`, `param` and `message`.

Imports only httpx and the standard library (no torch, nothing of the service).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.http import Client, ClientError, Progress

PaecError = ClientError
"""The one exception the SDK raises: `status`, `code`, `param`, `message`, `request_id`."""

LOSS_NAMES = {"grpo": "GRPO", "clip_cov": "Clip-Cov", "kl_cov": "KL-Cov", "cispo": "CISPO",
              "ce_gppo": "CE-GPPO", "erc": "ERC", "entropic": "EntroPIC", "aent": "AEnt"}
"""Display names of the trainer's loss types; the dashboard's (api/static/dashboard/js/
format.js) are the same. A loss type not listed is shown by its own name."""

COMPARE_METRICS = ("reward/mean", "reward/accuracy", "entropy", "entropy/masked",
                   "paec/floor")
"""The per-step metrics `compare` summarises (docs/metrics.md)."""

ACTIVE_EVALUATION = ("queued", "running")


def method_of(job: Mapping[str, Any]) -> str:
    """"PAEC", or the baseline a job trains with ("GRPO", "GRPO + entropy", "Clip-Cov",
    "PAEC (CISPO)", ...), from the effective hyperparameters the job echoes under
    method.reinforcement; the same rules as the dashboard's `methodOf`."""
    reinforcement = (job.get("method") or {}).get("reinforcement") or {}
    hyper = reinforcement.get("hyperparameters") or {}
    loss = hyper.get("loss") or {}
    loss_type = loss.get("loss_type")
    name = LOSS_NAMES.get(str(loss_type), str(loss_type)) if loss_type else "GRPO"
    if (loss.get("entropy_coef") or 0) > 0:
        name += " + entropy"
    if loss.get("high_entropy_quantile") is not None:
        name += " + 80/20"
    if (loss.get("kl_coef") or 0) > 0:
        name += " + KL"
    paec = hyper.get("paec") or {}
    if hyper.get("use_paec") is not False and paec.get("penalty_weight", 1) > 0:
        return "PAEC" if name == "GRPO" else f"PAEC ({name})"
    return name


# ---- what the routes answer ----

@dataclass(frozen=True)
class Series:
    """One metric of a job: its values at the steps that logged it, ascending."""

    name: str
    steps: list[int]
    values: list[float]

    @property
    def points(self) -> list[tuple[int, float]]:
        """(step, value) pairs."""
        return list(zip(self.steps, self.values, strict=True))

    @property
    def first(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    @property
    def mean(self) -> float | None:
        """The mean over the points held (every step when fetched with `full=True`)."""
        return sum(self.values) / len(self.values) if self.values else None


@dataclass(frozen=True)
class StreamEvent:
    """One message of a job's event stream: `event` is "message", "metrics", "end" (the
    last, once the job is terminal: `data` is {"job_id", "status"}) or "keep-alive"."""

    event: str
    id: str | None
    data: dict[str, Any]

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))

    @property
    def level(self) -> str:
        return str(self.data.get("level", ""))

    @property
    def created_at(self) -> int | None:
        value = self.data.get("created_at")
        return None if value is None else int(value)

    @property
    def payload(self) -> dict[str, Any]:
        """The event's `data` object (a step's metrics, a checkpoint id, ...); {} if none."""
        inner = self.data.get("data")
        return inner if isinstance(inner, dict) else {}

    @property
    def status(self) -> str | None:
        """The job's final status, on the `end` event."""
        return str(self.data["status"]) if self.event == "end" else None


@dataclass(frozen=True)
class TokenTrace:
    """One sampled completion, token by token (docs/cli.md, "Token traces"); every list has
    one entry per token, None where the trainer had no value."""

    index: int
    prompt: str | None
    advantage: float | None
    tokens: list[str]
    entropy: list[float | None]
    top_p_entropy: list[float | None]
    mask: list[float | None]
    nucleus_size: list[int | None]
    top_two_gap: list[float | None]


@dataclass(frozen=True)
class StepTraces:
    """The token traces of one training step."""

    job_id: str
    step: int
    samples: list[TokenTrace]


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint: a model name for jobs and evaluations, and an archive to download."""

    id: str
    job_id: str
    step: int
    model: str
    sha256: str
    """Of the full-state archive (`contents="full"`)."""
    bytes: int
    full_state: bool
    created_at: int
    metrics: dict[str, float]
    model_sha256: str | None = None
    """Of the model-only archive (weights, configs, tokenizer); None for a checkpoint saved
    before those existed, or from a server without them."""
    model_bytes: int | None = None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> CheckpointInfo:
        return cls(id=obj["id"], job_id=obj["fine_tuning_job_id"], step=obj["step_number"],
                   model=obj["fine_tuned_model_checkpoint"], sha256=obj["sha256"],
                   bytes=obj["bytes"], full_state=obj["full_state"],
                   created_at=obj["created_at"], metrics=dict(obj.get("metrics") or {}),
                   model_sha256=obj.get("model_sha256"), model_bytes=obj.get("model_bytes"))


@dataclass(frozen=True)
class Evaluation:
    """An evaluation: `results` maps each dataset to {"avg@k", "pass@k", "maj@k", "n"} once
    it succeeded; `error` is {code, message} once it failed."""

    id: str
    status: str
    model: str
    datasets: list[str]
    k: int
    settings: dict[str, Any]
    results: dict[str, dict[str, float]] | None
    error: dict[str, Any] | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    metadata: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE_EVALUATION

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Evaluation:
        return cls(id=obj["id"], status=obj["status"], model=obj["model"],
                   datasets=list(obj["datasets"]), k=obj["k"],
                   settings=dict(obj.get("settings") or {}), results=obj.get("results"),
                   error=obj.get("error"), created_at=obj["created_at"],
                   started_at=obj.get("started_at"), finished_at=obj.get("finished_at"),
                   metadata=obj.get("metadata"))


@dataclass(frozen=True)
class RunSummary:
    """One job as `compare` shows it: what it is, and its metrics' first, last and mean
    values, and its in-training evaluation scores at their last step."""

    job_id: str
    method: str
    status: str
    step: int
    total_steps: int
    metrics: dict[str, Series] = field(default_factory=dict)
    evals: dict[str, float] = field(default_factory=dict)
    eval_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.job_id, "method": self.method, "status": self.status,
                "step": self.step, "total_steps": self.total_steps,
                "metrics": {name: {"first": s.first, "last": s.last, "mean": s.mean,
                                   "points": len(s.values)} for name, s in self.metrics.items()},
                "eval": self.evals, "eval_step": self.eval_step}


def parse_metrics_csv(text: str) -> dict[str, Series]:
    """The series of a `format=csv` answer (`step,name1,...`; an empty cell: no value)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    names = rows[0][1:]
    points: dict[str, tuple[list[int], list[float]]] = {n: ([], []) for n in names}
    for row in rows[1:]:
        for name, cell in zip(names, row[1:], strict=True):
            if cell != "":
                points[name][0].append(int(row[0]))
                points[name][1].append(float(cell))
    return {name: Series(name, *points[name]) for name in names}


# ---- the client ----

class Paec(Client):
    """The paec API at `base_url` (default $PAEC_API_URL, else http://127.0.0.1:8000) as the
    tenant whose key is `api_key` (default $PAEC_API_KEY)."""

    def __enter__(self) -> Paec:
        return self

    # ---- metrics ----

    def job_metrics(self, job_id: str, names: Sequence[str] | None = None, *,
                    start: int | None = None, end: int | None = None,
                    max_points: int | None = None, full: bool = False) -> dict[str, Series]:
        """The job's metric series by name (every name it logged when `names` is None),
        between steps `start` and `end` (inclusive). The JSON answer is downsampled to
        `max_points` per name (the server's default 1000); `full=True` fetches every step
        (the CSV form) instead."""
        params: dict[str, str | int] = {"format": "csv"} if full else {}
        for key, value in (("start", start), ("end", end), ("max_points", max_points)):
            if value is not None:
                params[key] = value
        if names:
            params["names"] = ",".join(names)
        path = f"/api/jobs/{job_id}/metrics"
        if full:
            return parse_metrics_csv(self.send("GET", path, params=params).text)
        series = self.json("GET", path, params=params)["series"]
        return {name: Series(name, [int(s) for s in body["steps"]],
                             [float(v) for v in body["values"]])
                for name, body in series.items()}

    # ---- the event stream ----

    def events(self, job_id: str, *, after: str | None = None, keepalive: bool = False,
               reconnects: int = 5,
               on_reconnect: Callable[[str | None, Exception], None] | None = None
               ) -> Iterator[StreamEvent]:
        """The job's events, oldest first (after the event id `after`), live until the job
        ends: the `end` event is the last. A dropped connection is opened again with
        `Last-Event-ID`, so no event is lost or repeated. `keepalive=True` also yields the
        server's keep-alives (every 15 s of silence), for a caller that checks on the job
        while nothing happens. A key revoked meanwhile raises PaecError."""
        for message in self.follow_events(job_id, after=after, reconnects=reconnects,
                                          on_reconnect=on_reconnect):
            if message.comment is not None:
                if keepalive:
                    yield StreamEvent("keep-alive", None, {})
                continue
            if message.event == "error":
                error = message.data.get("error") or {}
                raise PaecError(str(error.get("message")), status=401,
                                code=error.get("code"), param=error.get("param"))
            yield StreamEvent(message.event, message.id, message.data)

    # ---- traces ----

    def traces(self, job_id: str, step: int | None = None) -> StepTraces:
        """The token traces of a step (default: the newest step with traces)."""
        params = {} if step is None else {"step": step}
        body = self.json("GET", f"/api/jobs/{job_id}/traces", params=params)
        samples = [TokenTrace(index=s["index"], prompt=s.get("prompt"),
                              advantage=s.get("advantage"), tokens=list(s["tokens"]),
                              entropy=list(s["entropy"]), top_p_entropy=list(s["top_p_entropy"]),
                              mask=list(s["mask"]), nucleus_size=list(s["nucleus_size"]),
                              top_two_gap=list(s["top_two_gap"])) for s in body["samples"]]
        return StepTraces(job_id=body["job_id"], step=body["step"], samples=samples)

    def trace_steps(self, job_id: str) -> list[int]:
        """The steps that have traces, ascending."""
        return [int(s) for s in self.json("GET", f"/api/jobs/{job_id}/traces/steps")["data"]]

    # ---- checkpoints ----

    def checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        return CheckpointInfo.from_api(self.get_checkpoint(checkpoint_id))

    def checkpoints(self, job_id: str) -> list[CheckpointInfo]:
        """The job's checkpoints, newest first."""
        return [CheckpointInfo.from_api(c) for c in self.list_checkpoints(job_id)["data"]]

    def download(self, checkpoint_id: str, target: str | Path, *, contents: str | None = None,
                 progress: Progress | None = None) -> Path:
        """A tar archive of the checkpoint, saved at `target` once its sha256 matches the
        server's, resumed from `target.part` after an interruption
        (client.http.Client.download_checkpoint). `contents` ("model": weights, configs,
        tokenizer; "full": also the training state) is passed on only when given, so the
        route's default applies otherwise."""
        target = Path(target)
        if contents is None:
            return self.download_checkpoint(checkpoint_id, target, progress)
        return self.download_checkpoint(checkpoint_id, target, progress, contents=contents)

    # ---- evaluations ----

    def evaluate(self, model: str, datasets: Sequence[str], **options: Any) -> Evaluation:
        """Queue an evaluation of `model` on `datasets` (file ids or built-in tasks).
        `options` are the request's other fields (k, grader, max_new_tokens, temperature,
        top_p, size, seed, metadata); one left out, or None, takes the server's default."""
        body = {"model": model, "datasets": list(datasets)}
        body |= {key: value for key, value in options.items() if value is not None}
        return Evaluation.from_api(self.create_evaluation(body))

    def evaluation(self, evaluation_id: str) -> Evaluation:
        return Evaluation.from_api(self.get_evaluation(evaluation_id))

    def wait_evaluation(self, evaluation_id: str, *, interval: float = 2.0,
                        timeout: float | None = None,
                        on_poll: Callable[[Evaluation, float], None] | None = None
                        ) -> Evaluation:
        """Poll the evaluation until it is no longer queued or running and return it (a
        failed one too: check `status`). `on_poll(evaluation, seconds waited)` hears every
        poll; past `timeout` seconds PaecError `timeout` is raised."""
        started = time.monotonic()
        while True:
            evaluation = self.evaluation(evaluation_id)
            waited = time.monotonic() - started
            if on_poll is not None:
                on_poll(evaluation, waited)
            if evaluation.done:
                return evaluation
            if timeout is not None and waited > timeout:
                raise PaecError(f"evaluation {evaluation_id} is still {evaluation.status} "
                                f"after {timeout:g} s", code="timeout")
            time.sleep(interval)

    # ---- comparing runs ----

    def summarize(self, job_id: str, names: Sequence[str] = COMPARE_METRICS) -> RunSummary:
        """The job's method, status and step, its `names` metrics over every step, and its
        last in-training evaluation (`eval/*` at the newest step that has one)."""
        job = self.get_job(job_id)
        logged = self.metric_names(job_id)
        wanted = [n for n in logged if n in names or n.startswith("eval/")]
        series = self.job_metrics(job_id, wanted, full=True) if wanted else {}
        evals = {n: s for n, s in series.items() if n.startswith("eval/")}
        eval_step = max((s.last_step for s in evals.values() if s.last_step is not None),
                        default=None)
        scores = {n.removeprefix("eval/"): s.values[-1] for n, s in evals.items()
                  if s.last_step == eval_step}
        return RunSummary(job_id=job_id, method=method_of(job), status=str(job["status"]),
                          step=int(job.get("step") or 0),
                          total_steps=int(job.get("total_steps") or 0),
                          metrics={n: series[n] for n in names if n in series},
                          evals=dict(sorted(scores.items())), eval_step=eval_step)
