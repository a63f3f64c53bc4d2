"""Benchmark of job status polling: requests per second and latency percentiles of
64 concurrent clients polling one job over loopback, against Postgres, while a job writes a
step of metrics and an event every 0.5 s. Target: p99 < 25 ms.

What it does:
  1. creates a fresh Postgres database and runs the migrations (tests.service helpers);
  2. starts the real API, `uvicorn api.app:app --workers W`, in a subprocess;
  3. creates a tenant, a key and a running job (store.tenants, tests.service.make_job);
  4. starts a writer process: every --write-interval s, one transaction records --metrics
     values at the next step (store.metrics.record_metrics), adds a `metrics` event and
     advances Job.step, as the worker does;
  5. runs --clients concurrent clients, each polling the route on its own keep-alive
     connection, back to back (closed loop: the saturation throughput; latency is then
     clients / throughput by Little's law) or every --interval s (open loop: the latency at
     a given load, counted from each request's due time), for --warmup s (not measured)
     then --duration s;
  6. prints one JSON line: rps, p50, p90, p99, max (ms), errors, and the settings.

The clients speak HTTP/1.1 on raw asyncio streams rather than through httpx: on a 2-core
machine the load generator shares the CPU with the server and Postgres, and httpx costs
about ten times as much CPU per request, which would measure the client more than the API.
(Every response is checked for status 200 and a complete body.)

    .venv/bin/python bench/polling.py                          # GET /v1/fine_tuning/jobs/{id}
    .venv/bin/python bench/polling.py --route names            # GET /api/jobs/{id}/metrics/names
    .venv/bin/python bench/polling.py --interval 0.25         # 64 clients x 4 polls/s
    .venv/bin/python bench/polling.py --workers 2 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.service`, when run as a script from anywhere

ROUTES = {
    "job": "/v1/fine_tuning/jobs/{job_id}",
    "names": "/api/jobs/{job_id}/metrics/names",
    "metrics": "/api/jobs/{job_id}/metrics?names=loss/total,reward/mean&max_points=200",
    "health": "/health",
}


def _writer(url: str, job_id: str, interval: float, n_metrics: int, stop_at: float) -> None:
    """The training job's side: a step of metrics and an event per `interval` seconds."""
    from sqlalchemy import update

    from store.db import make_engine, make_sessionmaker, transaction
    from store.events import add_event
    from store.metrics import record_metrics
    from store.models import Job

    engine = make_engine(url, pool_size=1, max_overflow=0)
    sessions = make_sessionmaker(engine)
    names = ["loss/total", "reward/mean"] + [f"paec/stat_{i:02d}" for i in range(n_metrics - 2)]
    step = 0
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        step += 1
        values = {name: (step * (i + 1)) % 97 / 97 for i, name in enumerate(names)}
        with transaction(sessions) as session:
            record_metrics(session, job_id, step, values)
            add_event(session, job_id, f"Step {step}: reward 0.5", type_="metrics",
                      data={"step": step, "total_steps": 10_000}, key=f"step-{step}")
            session.execute(update(Job).where(Job.id == job_id).values(step=step))
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    engine.dispose()


async def _client(port: int, request: bytes, until: float, warm_until: float,
                  interval: float, offset: float, latencies: list[float],
                  errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = time.perf_counter() + offset
    try:
        while True:
            if interval > 0:
                # Open loop: each request is due at a fixed time, and its latency counts from
                # then, so a slow response also counts against the requests it delayed
                # (no coordinated omission).
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                start = due
                due += interval
            else:
                start = time.perf_counter()
            if start >= until:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            elapsed = time.perf_counter() - start
            if status != b"200":
                errors.append(status.decode())
            elif start >= warm_until:
                latencies.append(elapsed)
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


async def _load(port: int, path: str, key: str, clients: int, warmup: float,
                duration: float, interval: float) -> tuple[list[float], list[str], float]:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n").encode()
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    warm_until, until = t0 + warmup, t0 + warmup + duration
    # Clients start spread over one interval, as independent pollers would be.
    await asyncio.gather(*(_client(port, request, until, warm_until, interval,
                                   interval * i / clients, latencies, errors)
                           for i in range(clients)))
    return latencies, errors, duration


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _start_api(url: str, port: int, workers: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PAEC_DATABASE_URL": url, "PAEC_DATA_DIR": data_dir,
           "PAEC_BROKER_URL": "redis://127.0.0.1:6379/14"}
    # The API writes a JSON access line per request to stderr: into a file beside the data,
    # not the benchmark's terminal.
    log = open(Path(data_dir) / "api.log", "ab")  # noqa: SIM115 (the server's lifetime)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port",
         str(port), "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT, env=env, stderr=log)


@dataclass(frozen=True)
class Served:
    """A database with one tenant's running job, and the API serving it."""

    database_url: str
    data_dir: str
    job_id: str
    key: str
    port: int
    api: subprocess.Popen[bytes]


@contextlib.contextmanager
def served_job(prefix: str, workers: int = 1) -> Iterator[Served]:
    """A fresh migrated Postgres database holding a tenant, its key and a running job, and
    `uvicorn api.app:app` serving it once /health answers; both removed afterwards."""
    from store.db import make_engine, make_sessionmaker, transaction
    from store.tenants import create_key, create_tenant
    from tests.service import free_port, fresh_postgres, make_job, migrate, wait_for_health

    with fresh_postgres(prefix) as url, tempfile.TemporaryDirectory() as data_dir:
        migrate(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            tenant = create_tenant(session, prefix)
            key = create_key(session, tenant).secret
        job_id = make_job(sessions, tenant.id, status="running", total_steps=10_000)
        engine.dispose()
        port = free_port()
        api = _start_api(url, port, workers, data_dir)
        try:
            wait_for_health(f"http://127.0.0.1:{port}", api, timeout=60)
            yield Served(url, data_dir, job_id, key, port, api)
        finally:
            api.terminate()
            api.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--route", choices=sorted(ROUTES), default="job")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between one client's polls (0: back to back)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    # One process by default: uvicorn's --workers N leaves TCP_NODELAY off on accepted
    # sockets (uvicorn issue #3149), which costs every keep-alive request ~40 ms.
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--write-interval", type=float, default=0.5)
    parser.add_argument("--metrics", type=int, default=40, help="metrics per written step")
    parser.add_argument("--no-writer", action="store_true")
    args = parser.parse_args()

    import httpx

    with served_job("paec_bench", args.workers) as served:
        url, job_id, key, port = served.database_url, served.job_id, served.key, served.port
        path = ROUTES[args.route].format(job_id=job_id)
        writer: multiprocessing.Process | None = None
        try:
            check = httpx.get(f"http://127.0.0.1:{port}{path}",
                              headers={"Authorization": f"Bearer {key}"})
            if check.status_code != 200:
                raise SystemExit(f"GET {path} -> {check.status_code}: {check.text[:300]}")
            if not args.no_writer:
                stop_at = time.monotonic() + args.warmup + args.duration + 1
                writer = multiprocessing.get_context("spawn").Process(
                    target=_writer, args=(url, job_id, args.write_interval, args.metrics,
                                          stop_at), daemon=True)
                writer.start()
            latencies, errors, duration = asyncio.run(
                _load(port, path, key, args.clients, args.warmup, args.duration,
                      args.interval))
            steps_written = httpx.get(
                f"http://127.0.0.1:{port}/api/jobs/{job_id}/metrics?names=loss/total"
                "&format=csv", headers={"Authorization": f"Bearer {key}"}).text.count("\n") - 1
        finally:
            if writer is not None:
                writer.join(timeout=10)

    ms = sorted(v * 1000 for v in latencies)
    print(json.dumps({
        "route": ROUTES[args.route].split("?")[0], "clients": args.clients,
        "interval_s": args.interval,
        "workers": args.workers, "duration_s": duration, "requests": len(ms),
        "rps": round(len(ms) / duration, 1),
        "p50_ms": round(_percentile(ms, 0.50), 2), "p90_ms": round(_percentile(ms, 0.90), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2), "max_ms": round(ms[-1], 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
        "writer_steps": None if args.no_writer else steps_written,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
