"""The main job, one command (`make demo`): a real PAEC fine-tuning job of the built-in
SmolLM2-135M-Instruct, submitted over HTTP to the service running on its embedded default
(SQLite database, server-free broker, local artifacts: no Docker, Postgres or Redis).

1. migrate the database, create an API key, start the API (uvicorn) and a worker (Celery);
2. upload a built-in offline dataset (one-digit additions, split into train and held-out);
3. evaluate the base model on the held-out set (POST /api/evaluations);
4. submit the PAEC job (POST /v1/fine_tuning/jobs) and follow it live over SSE: steps,
   reward, entropy, and the masked entropy against PAEC's floor;
5. evaluate the fine-tuned model; download its checkpoint's model-only archive (weights in
   the trained dtype, configs, tokenizer: not the optimiser state; sha256 checked), load it
   with plain transformers and answer one held-out problem;
6. stop everything it started. If a step fails, it says which and why.

    python -m client.demo [--steps 8] [--data-dir var/demo] [--model builtin:...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def say(text: str) -> None:
    print(text, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step's title and its duration; turn any failure into a DemoError naming it."""
    say(f"\n== {title}")
    start = time.monotonic()
    try:
        yield
    except DemoError:
        raise
    except Exception as exc:
        raise DemoError(f"step '{title}' failed: {type(exc).__name__}: {exc}") from exc
    say(f"   ({time.monotonic() - start:.1f} s)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """The API and worker processes the demo starts; all stopped on exit."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  # closed in stop()
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def check(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise DemoError(f"the {name} process exited with code {proc.returncode}; "
                                f"its log:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, log in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def run(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise DemoError(f"`python {' '.join(args)}` failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def dataset(train: int = 64) -> tuple[bytes, bytes]:
    """The 81 one-digit additions, shuffled once: `train` for training, the rest held out
    (no problem is in both)."""
    from paec.data import builtin_task  # torch-free

    rows = builtin_task("builtin:add", size=81, seed=0)
    lines = [json.dumps({"messages": list(r.messages), "answer": r.item["answer"]})
             for r in rows]
    return ("\n".join(lines[:train]) + "\n").encode(), ("\n".join(lines[train:]) + "\n").encode()


def wait_ready(api: httpx.Client, procs: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        try:
            if api.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise DemoError(f"the API did not become ready in {timeout:.0f} s:\n{procs.tail('api')}")


def expect(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON of a successful response, else a DemoError with the API's error message."""
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['message']} (code {error['code']}, param {error['param']})"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:500]
        raise DemoError(f"{what}: HTTP {response.status_code}: {detail}")
    body: dict[str, Any] = response.json()
    return body


def evaluate(api: httpx.Client, procs: Processes, model: str, dataset_id: str, k: int,
             timeout: float = 900) -> dict[str, float]:
    """Run an evaluation through the API and wait for it."""
    created = expect(api.post("/api/evaluations", json={
        "model": model, "datasets": [dataset_id], "k": k, "max_new_tokens": 24,
        "temperature": 1.0, "seed": 0}), "create the evaluation")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        ev = expect(api.get(f"/api/evaluations/{created['id']}"), "poll the evaluation")
        if ev["status"] == "succeeded":
            result: dict[str, float] = ev["results"][dataset_id]
            return result
        if ev["status"] in ("failed", "cancelled"):
            raise DemoError(f"the evaluation {ev['status']}: {ev.get('error')}")
        time.sleep(1)
    raise DemoError(f"the evaluation did not finish in {timeout:.0f} s:\n{procs.tail('worker')}")


def sse(api: httpx.Client, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of a Server-Sent Events stream."""
    with api.stream("GET", path, timeout=httpx.Timeout(30, read=None)) as response:
        if response.status_code != 200:
            response.read()
            expect(response, "open the event stream")
        kind, data = "message", ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data += line.removeprefix("data:").strip()
            elif line == "" and data:
                yield kind, json.loads(data)
                kind, data = "message", ""


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def bar(step: int, total: int, width: int = 24) -> str:
    done = int(width * step / max(total, 1))
    return "[" + "#" * done + "." * (width - done) + f"] {step}/{total}"


def follow(api: httpx.Client, job_id: str) -> str:
    """Print the job's progress from its live event stream; return its final status."""
    status = "running"
    for kind, data in sse(api, f"/api/jobs/{job_id}/stream"):
        if kind == "end":
            status = str(data.get("status", status))
            break
        payload = data.get("data") or {}
        if kind == "metrics" and "step" in payload and "entropy" in payload:
            ent = payload["entropy"]
            say(f"   {bar(payload['step'], payload['total_steps'])}  "
                f"reward {fmt(payload.get('train_mean_reward'))}  "
                f"entropy {fmt(ent.get('full'))}  masked {fmt(ent.get('masked'))} "
                f"(floor {fmt(ent.get('floor'))})  "
                f"{fmt((payload.get('timing') or {}).get('step', {}).get('full_iteration'))} s")
        elif kind == "message":
            say(f"   {data.get('message')}")
    return status


def download(api: httpx.Client, checkpoint: dict[str, Any], target: Path) -> Path:
    """Stream the checkpoint's model-only archive to disk, check its sha256, unpack it."""
    archive = target / "checkpoint.tar"
    digest = hashlib.sha256()
    with api.stream("GET", checkpoint["download_url"], params={"contents": "model"}
                    ) as response, open(archive, "wb") as out:
        if response.status_code != 200:
            response.read()
            expect(response, "download the checkpoint")
        for chunk in response.iter_bytes():
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != checkpoint["model_sha256"]:
        raise DemoError("the downloaded checkpoint's sha256 does not match the server's")
    folder = target / "model"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m client.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="training steps (default 8)")
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "var" / "demo",
                    help="the embedded service's data (recreated)")
    ap.add_argument("--k", type=int, default=4, help="samples per problem in evaluations")
    ap.add_argument("--models-dir", type=Path, help="an operator models directory "
                    "(for --model local:<name>)")
    ap.add_argument("--hyperparameters", default="{}",
                    help="JSON merged into the job's hyperparameters")
    ap.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the API (and its dashboard) up after the demo until Ctrl-C "
                         "(default: when run from a terminal)")
    return ap.parse_args(argv)


def service_env(args: argparse.Namespace) -> dict[str, str]:
    """Recreate the data folder; the environment of the service's processes: this one's,
    without its PAEC_ settings but the cache, pointed at that folder, offline."""
    shutil.rmtree(args.data_dir, ignore_errors=True)
    args.data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PAEC_") or k == "PAEC_CACHE_DIR"}
    env |= {"PAEC_DATA_DIR": str(args.data_dir.resolve()), "HF_HUB_OFFLINE": "1",
            "PAEC_WORKER_DEVICE": "auto", "PYTHONUNBUFFERED": "1"}
    if args.models_dir:
        env["PAEC_MODELS_DIR"] = str(args.models_dir.resolve())
    return env


def start_service(args: argparse.Namespace, env: dict[str, str], procs: Processes
                  ) -> tuple[httpx.Client, str]:
    """Migrate, create an API key, start the API and a worker; a client holding the key."""
    run(["-m", "store.admin", "migrate"], env)
    key = json.loads(run(["-m", "store.admin", "create-key", "--tenant", "demo"], env))
    port = free_port()
    procs.start("api", ["-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning"])
    procs.start("worker", ["-m", "celery", "-A", "worker.celery_app", "worker",
                           "-Q", "training,evaluation", "--pool", "solo",
                           "--concurrency", "1", "--loglevel", "WARNING"])
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                       headers={"Authorization": f"Bearer {key['api_key']}"})
    wait_ready(api, procs)
    say(f"   API http://127.0.0.1:{port} (docs at /docs), worker started, data in "
        f"{args.data_dir}")
    say(f"   Dashboard http://127.0.0.1:{port}/ui/  (sign in with the demo's key "
        f"{key['api_key']}; watch the job live there)")
    return api, str(key["api_key"])


def upload_datasets(api: httpx.Client) -> tuple[dict[str, str], bytes]:
    """Upload the training and held-out splits: (file id by name, the held-out rows)."""
    train_bytes, held_bytes = dataset()
    files = {}
    for name, body in (("add-train.jsonl", train_bytes), ("add-heldout.jsonl", held_bytes)):
        f = expect(api.post("/v1/files", files={"file": (name, body)},
                            data={"purpose": "fine-tune"}), f"upload {name}")
        files[name] = f["id"]
        say(f"   {f['id']}  {name}  {f['rows']} rows  {f['status']}")
    return files, held_bytes


def fine_tune(api: httpx.Client, procs: Processes, args: argparse.Namespace,
              training_file: str) -> dict[str, Any]:
    """Submit the PAEC job, follow it to its end; the succeeded job."""
    hyper = {"n_epochs": "auto", "steps": args.steps, "batch_size": 4, "group_size": 8,
             "max_new_tokens": 24, "learning_rate": 2e-6, "micro_batch_size": 8,
             "paec": {"anchor_steps": 2}, "loss": {"clip_high": 0.28}}
    hyper |= json.loads(args.hyperparameters)
    hyper.pop("n_epochs")
    job = expect(api.post("/v1/fine_tuning/jobs", json={
        "model": args.model, "training_file": training_file, "seed": 0,
        "suffix": "demo", "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "math_verify", "name": "correct",
                       "input": "{{sample.output_text}}",
                       "reference": "{{item.answer}}"},
            "hyperparameters": hyper}}}), "submit the job")
    say(f"   {job['id']} {job['status']}")
    status = follow(api, job["id"])
    job = expect(api.get(f"/v1/fine_tuning/jobs/{job['id']}"), "read the job")
    if status != "succeeded" or job["status"] != "succeeded":
        raise DemoError(f"the job ended {job['status']}: {job.get('error')}\n"
                        f"{procs.tail('worker')}")
    say(f"   fine-tuned model: {job['fine_tuned_model']}")
    return job


def load_checkpoint(api: httpx.Client, job: dict[str, Any], target: Path,
                    row: dict[str, Any]) -> None:
    """Download the job's final checkpoint and answer one held-out problem with it."""
    ckpts = expect(api.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints"),
                   "list checkpoints")["data"]
    folder = download(api, ckpts[0], target)
    say(f"   {ckpts[0]['id']}: model-only archive {_mb(ckpts[0]['model_bytes'])} (the "
        f"full-state one, to resume from, is {_mb(ckpts[0]['bytes'])}), sha256 verified, "
        f"unpacked to {folder}")
    answer = generate(folder, row)
    say(f"   AutoModelForCausalLM.from_pretrained -> {answer}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 10**7 else f"{size / 1e6:.0f} MB"


def print_before_after(before: dict[str, float], after: dict[str, float], k: int) -> None:
    say(f"\n== Before vs after (held-out, k={k})")
    for name in sorted(before):
        if name != "n":
            say(f"   {name:<10} {before[name]:.3f} -> {after.get(name, float('nan')):.3f}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo's steps in order; 0 when all succeed, 1 (saying which failed) otherwise."""
    args = parse_args(argv)
    env = service_env(args)
    procs = Processes(env, args.data_dir)
    started = time.monotonic()
    try:
        with step("Start the service on its embedded default (SQLite, no servers)"):
            api, key = start_service(args, env, procs)
        with step("Upload the dataset (one-digit additions: 64 to train on, 17 held out)"):
            files, held_bytes = upload_datasets(api)
        heldout = files["add-heldout.jsonl"]
        with step(f"Evaluate the base model on the held-out problems (k={args.k})"):
            before = evaluate(api, procs, args.model, heldout, args.k)
            say("   " + json.dumps(before))
        with step(f"Fine-tune with PAEC over HTTP ({args.steps} steps)"):
            job = fine_tune(api, procs, args, files["add-train.jsonl"])
        with step("Evaluate the fine-tuned model on the same held-out problems"):
            after = evaluate(api, procs, job["fine_tuned_model"], heldout, args.k)
            say("   " + json.dumps(after))
        with step("Download the final checkpoint (model only) and load it with transformers"):
            load_checkpoint(api, job, args.data_dir, json.loads(held_bytes.splitlines()[0]))
        print_before_after(before, after, args.k)
        say(f"\nDone in {(time.monotonic() - started) / 60:.1f} min.")
        show_dashboard(args, api, key, job["id"])
        return 0
    except DemoError as exc:
        say(f"\nDEMO FAILED: {exc}")
        return 1
    finally:
        procs.stop()


def show_dashboard(args: argparse.Namespace, api: httpx.Client, key: str, job_id: str) -> None:
    """Say where the job can be seen; with --serve (by default from a terminal), keep the
    service up until Ctrl-C, otherwise say how to start its API again on the demo's data."""
    url = f"{api.base_url}/ui/#/jobs/{job_id}"
    serve = args.serve if args.serve is not None else sys.stdin.isatty() and sys.stdout.isatty()
    say("\n== See it in the dashboard")
    say(f"   {url}\n   API key: {key}")
    if not serve:
        say(f"   (the service stops now; to open it again: PAEC_DATA_DIR={args.data_dir} "
            f"{sys.executable} -m uvicorn api.app:app --port {api.base_url.port}, then the "
            "URL above)")
        return
    say("   The service stays up for the dashboard; press Ctrl-C to stop it.")
    signal.signal(signal.SIGTERM, _interrupt)  # a `kill` stops it as cleanly as Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("   stopping")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def generate(folder: Path, row: dict[str, Any]) -> str:
    """Greedy answer of the downloaded model to one held-out problem."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(row["messages"], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    text = str(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    question = row["messages"][-1]["content"]
    return f"{question!r} -> {text.strip()!r} (reference {row['answer']})"


if __name__ == "__main__":
    sys.exit(main())
