"""Load on the API: status polls by 32 and 64 clients, then 64 pollers together with 100 open
SSE streams and a large streamed upload; latency, errors and the API's memory.

What it does:
  1. a fresh Postgres database, migrated; the real API (`uvicorn api.app:app`, one process)
     in a subprocess; a tenant, a key and a running job (as bench/polling.py);
  2. a writer process adds a step of metrics and an event to the job every 0.5 s, as a
     training worker does, so the SSE streams have something to carry;
  3. phase `poll32`: 32 clients each poll GET /v1/fine_tuning/jobs/{id} once every
     --interval s (open loop: latency counted from each request's due time) for --duration s;
  4. phase `poll64`: the same with 64 clients;
  5. phase `mixed`: 64 pollers as in `poll64`, and at the same time 100 clients holding
     GET /api/jobs/{id}/stream open for the whole phase, and one client uploading a
     --upload-mb MB JSONL dataset to POST /v1/files (streamed from disk);
  6. the API's resident memory (VmRSS) is sampled every 0.2 s; its peak (VmHWM) and its
     RSS before and after the phases are reported;
  7. prints one JSON line per phase and one summary line.

Pass: status polls p99 < 25 ms with 64 clients, no errors, memory flat (RSS after the
phases within a few MB of RSS before, the upload's spool on disk, not in memory).

    .venv/bin/python bench/load.py                        # ~75 s
    .venv/bin/python bench/load.py --duration 5 --upload-mb 20   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.service`
sys.path.insert(0, str(ROOT / "bench"))  # `polling`, the poller and the job writer

import polling  # noqa: E402  (bench/polling.py)


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class MemorySampler:
    """The API process's VmRSS every 0.2 s, on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, [_rss_kb(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(_rss_kb(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def _stream(port: int, path: str, key: str, until: float,
                  events: list[int], errors: list[str]) -> None:
    """One SSE client: holds the stream open until `until`, counting `data:` lines."""
    count = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n")
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200":
            errors.append(head[9:12].decode())
            writer.close()
            return
        while True:
            left = until - time.perf_counter()
            if left <= 0:
                break
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=left)
            except TimeoutError:
                break
            if not line:
                errors.append("closed early")
                break
            if line.startswith(b"data:"):
                count += 1
        writer.close()
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    events.append(count)


def _upload(port: int, key: str, path: Path, result: dict[str, Any]) -> None:
    import httpx

    start = time.perf_counter()
    with path.open("rb") as fh:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/files",
                              headers={"Authorization": f"Bearer {key}"},
                              data={"purpose": "fine-tune"},
                              files={"file": ("big.jsonl", fh, "application/jsonl")},
                              timeout=600)
    result.update(status=response.status_code, seconds=round(time.perf_counter() - start, 2),
                  mb=round(path.stat().st_size / 1e6, 1))


def _write_dataset(path: Path, megabytes: float) -> None:
    row = json.dumps({"prompt": "What is 12345 + 67890? " + "Think step by step. " * 10,
                      "answer": "80235"}).encode() + b"\n"
    with path.open("wb") as fh:
        for _ in range(int(megabytes * 1e6 / len(row)) + 1):
            fh.write(row)


def _summary(name: str, latencies: list[float], errors: list[str],
             duration: float, **extra: Any) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in latencies)
    return {
        "phase": name, "requests": len(ms), "rps": round(len(ms) / duration, 1),
        "p50_ms": round(polling._percentile(ms, 0.50), 2) if ms else None,
        "p99_ms": round(polling._percentile(ms, 0.99), 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "errors": len(errors), "error_kinds": sorted(set(errors))[:5], **extra,
    }


async def _mixed(port: int, poll_path: str, stream_path: str, key: str, args: argparse.Namespace,
                 dataset: Path) -> dict[str, Any]:
    upload: dict[str, Any] = {}
    uploader = threading.Thread(target=_upload, args=(port, key, dataset, upload))
    until = time.perf_counter() + args.warmup + args.duration
    events: list[int] = []
    stream_errors: list[str] = []
    streams = [_stream(port, stream_path, key, until, events, stream_errors)
               for _ in range(args.streams)]
    uploader.start()
    (latencies, errors, duration), *_ = await asyncio.gather(
        polling._load(port, poll_path, key, 64, args.warmup, args.duration, args.interval),
        *streams)
    await asyncio.to_thread(uploader.join)
    return _summary("mixed", latencies, errors, duration, streams=args.streams,
                    stream_errors=len(stream_errors),
                    stream_error_kinds=sorted(set(stream_errors))[:5],
                    events_per_stream_min=min(events) if events else 0,
                    events_per_stream_mean=round(statistics.fmean(events), 1) if events else 0,
                    upload=upload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between one poller's requests")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--upload-mb", type=float, default=100.0)
    args = parser.parse_args()

    import httpx

    with polling.served_job("paec_load") as served:
        url, job_id, key, port, api = (served.database_url, served.job_id, served.key,
                                       served.port, served.api)
        poll_path = f"/v1/fine_tuning/jobs/{job_id}"
        stream_path = f"/api/jobs/{job_id}/stream"
        dataset = Path(served.data_dir) / "big.jsonl"
        _write_dataset(dataset, args.upload_mb)
        writer = None
        results = []
        try:
            httpx.get(f"http://127.0.0.1:{port}{poll_path}",
                      headers={"Authorization": f"Bearer {key}"}).raise_for_status()
            rss_before = _rss_kb(api.pid)
            memory = MemorySampler(api.pid)
            stop_at = time.monotonic() + 3 * (args.warmup + args.duration) + 120
            writer = multiprocessing.get_context("spawn").Process(
                target=polling._writer, args=(url, job_id, 0.5, 40, stop_at), daemon=True)
            writer.start()
            for clients in (32, 64):
                latencies, errors, duration = asyncio.run(polling._load(
                    port, poll_path, key, clients, args.warmup, args.duration, args.interval))
                results.append(_summary(f"poll{clients}", latencies, errors, duration,
                                        clients=clients))
                print(json.dumps(results[-1]), flush=True)
            results.append(asyncio.run(_mixed(port, poll_path, stream_path, key, args,
                                              dataset)))
            print(json.dumps(results[-1]), flush=True)
            time.sleep(2)  # let the upload's buffers go
            memory.stop()
            rss_after = _rss_kb(api.pid)
            peak = _rss_kb(api.pid, "VmHWM")
        finally:
            if writer is not None:
                writer.terminate()
                writer.join(timeout=10)

    print(json.dumps({
        "summary": True, "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
        "rss_max_sampled_mb": round(max(memory.samples) / 1024, 1),
        "poll64_p99_ms": next(r["p99_ms"] for r in results if r["phase"] == "poll64"),
        "errors": sum(r["errors"] + r.get("stream_errors", 0) for r in results),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
