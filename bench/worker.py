"""Worker overhead: the step time of a job run through the service (Celery worker, Postgres
writes of metrics and events, heartbeats, checkpoint archives uploaded to storage) against
the same trainer called directly, in one run; and the time from submit to the first step
with an idle, warm worker.

    .venv/bin/python bench/worker.py [--model tiny|smollm2] [--steps 20] [--repeats 2]

Needs Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379), as the tests do. Step time is the
wall time between consecutive step ends (on_step_end in the direct run; the step events'
timestamps through the worker), so everything the worker adds between steps is counted.
Reported: median and mean step time of each path, their ratio (target <= 1.03), and
submit-to-first-step latency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paec.config.training import TrainConfig  # noqa: E402
from paec.data import builtin_task  # noqa: E402
from paec.modeling.loader import resolve_model, tiny_model  # noqa: E402
from paec.training.callbacks import Callback  # noqa: E402
from paec.training.trainer import Trainer  # noqa: E402
from store.db import as_utc, make_engine, make_sessionmaker  # noqa: E402
from store.models import Event  # noqa: E402
from tests.service import fresh_postgres, migrate, new_tenant_key  # noqa: E402

BROKER = "redis://127.0.0.1:6379/12"


class StepClock(Callback):
    """Wall-clock time of every step end."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.times.append(time.perf_counter())


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    small = args.model == "tiny"
    return {"steps": args.steps, "batch_size": 4, "group_size": 4 if small else 8,
            "max_new_tokens": 16 if small else 24, "micro_batch_size": 8,
            "learning_rate": 1e-4 if small else 2e-6, "checkpoint_every": 5}


GRADER = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}


def direct(args: argparse.Namespace, model: str, data: Path, out: Path) -> list[float]:
    h = hyperparameters(args)
    cfg = TrainConfig(model=model, train_data=str(data), output_dir=str(out), seed=0,
                      steps=h["steps"], prompts_per_step=h["batch_size"],
                      group_size=h["group_size"], max_new_tokens=h["max_new_tokens"],
                      micro_batch_size=h["micro_batch_size"], learning_rate=h["learning_rate"],
                      checkpoint_every=h["checkpoint_every"], grader=GRADER, device="cpu")
    clock = StepClock()
    Trainer(cfg, callbacks=[clock]).train()
    return intervals(clock.times)


def through_worker(args: argparse.Namespace, env: dict[str, str], api: str, key: str,
                   data: Path, sessions: Any) -> tuple[list[float], float, float]:
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"},
                          timeout=60)
    file_id = client.post("/v1/files", files={"file": ("train.jsonl", data.read_bytes())},
                          data={"purpose": "fine-tune"}).json()["id"]
    body = {"model": "local:bench", "training_file": file_id, "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": hyperparameters(args)}}}
    submitted = time.time()
    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    while True:
        status = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    if status != "succeeded":
        raise SystemExit(f"the job ended {status}")
    with sessions() as session:
        stamps = [as_utc(e.created_at).timestamp() for e in session.scalars(
            select(Event).where(Event.job_id == job["id"], Event.key.like("step:%"))
            .order_by(Event.seq))]
        started = session.scalars(select(Event).where(
            Event.job_id == job["id"], Event.message.like("Training started%"))).one()
    return intervals(stamps), as_utc(started.created_at).timestamp() - submitted, \
        stamps[0] - submitted


def write_model(args: argparse.Namespace, models: Path) -> None:
    """The model to train, as `local:bench` in the operator models directory `models`."""
    source = resolve_model("builtin:smollm2-135m-instruct")
    if args.model == "tiny":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)
        tiny_model(tok, n_layer=2, n_embd=64, n_head=2).save_pretrained(models / "bench")
        tok.save_pretrained(models / "bench")
    else:  # a copy: a symlink would point outside the models directory, which is refused
        import shutil

        shutil.copytree(source, models / "bench")


def write_data(path: Path) -> None:
    """The 81 one-digit additions as a JSONL dataset with answers."""
    path.write_text("".join(json.dumps({"messages": list(r.messages),
                                        "answer": r.item["answer"]}) + "\n"
                            for r in builtin_task("builtin:add", size=81, seed=0)))


def start_service(env: dict[str, str], port: int, logs: IO[bytes]
                  ) -> list[subprocess.Popen[bytes]]:
    """The API (uvicorn) and a training worker (Celery), logging to `logs`."""
    return [subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--port",
                              str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                             stdout=logs, stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app",
                              "worker", "-Q", "training", "--pool", "solo",
                              "--loglevel", "WARNING"], cwd=ROOT, env=env, stdout=logs,
                             stderr=subprocess.STDOUT)]


def wait_ready(api: str) -> None:
    """Until the API answers /ready (at most about 20 s), then while the worker warms up."""
    for _ in range(100):
        try:
            if httpx.get(api + "/ready").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    time.sleep(15)  # the worker imports torch and becomes idle


def summary(args: argparse.Namespace, rows: list[tuple[list[float], list[float], float, float]],
            torch_threads: str) -> dict[str, Any]:
    """The report: step times of both paths over all repeats, their ratios, the latencies."""
    d_all = [x for d, _, _, _ in rows for x in d]
    w_all = [x for _, w, _, _ in rows for x in w]
    return {
        "model": args.model, "steps": args.steps, "repeats": args.repeats,
        "hyperparameters": hyperparameters(args), "torch_threads": torch_threads,
        "direct_step_s": {"median": statistics.median(d_all), "mean": statistics.fmean(d_all)},
        "worker_step_s": {"median": statistics.median(w_all), "mean": statistics.fmean(w_all)},
        "ratio_median": statistics.median(w_all) / statistics.median(d_all),
        "ratio_mean": statistics.fmean(w_all) / statistics.fmean(d_all),
        "submit_to_claim_s": [c for _, _, c, _ in rows],
        "submit_to_first_step_end_s": [f for _, _, _, f in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    with tempfile.TemporaryDirectory() as tmp, fresh_postgres("paec_bench") as url:
        root = Path(tmp)
        migrate(url)
        models, data = root / "models", root / "train.jsonl"
        write_model(args, models)
        write_data(data)
        redis.Redis.from_url(BROKER).flushdb()
        env = {**os.environ, "PAEC_DATABASE_URL": url, "PAEC_BROKER_URL": BROKER,
               "PAEC_DATA_DIR": str(root / "data"), "PAEC_MODELS_DIR": str(models),
               "PAEC_WORKER_DEVICE": "cpu"}
        sessions = make_sessionmaker(make_engine(url))
        _, key = new_tenant_key(sessions)
        port = 18000 + os.getpid() % 1000
        api = f"http://127.0.0.1:{port}"
        with open(root / "procs.log", "wb") as logs:
            procs = start_service(env, port, logs)
            try:
                wait_ready(api)
                rows = []
                for r in range(args.repeats):  # alternate, so drift hits both paths alike
                    d = direct(args, str(models / "bench"), data, root / f"direct-{r}")
                    w, claimed, first = through_worker(args, env, api, key, data, sessions)
                    rows.append((d, w, claimed, first))
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(timeout=30)
    print(json.dumps(summary(args, rows, torch_threads), indent=2))


if __name__ == "__main__":
    main()
