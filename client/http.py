"""A small typed HTTP client of the paec API, used by the `paec` command (client/cli.py).

    from client.http import Client
    api = Client()                       # PAEC_API_URL / PAEC_API_KEY, or pass them
    job = api.get_job("ftjob-...")

Every failure is a ClientError: an error answer carries the API's message, code and param
(the OpenAI envelope), and a connection failure names the URL it tried and how to set it.
Two transfers are more than one request: `follow_events` reads the Server-Sent Events
stream and reconnects with `Last-Event-ID` after a dropped connection, and
`download_checkpoint` resumes a partial archive (`.part`) with `Range` and checks its sha256.

Imports only httpx and the standard library (no torch, nothing of the service).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV = "PAEC_API_URL", "PAEC_API_KEY"
IDEMPOTENCY_HEADER = "Idempotency-Key"
CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) while a download runs."""


class ClientError(Exception):
    """A request that failed: the API's error (status, code, param) or no answer at all."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code
        self.param, self.request_id = param, request_id

    def __str__(self) -> str:
        details = [f"HTTP {self.status}"] if self.status is not None else []
        details += [f"code {self.code}"] if self.code else []
        details += [f"param {self.param}"] if self.param else []
        return f"{self.message} ({', '.join(details)})" if details else self.message


def error_from(response: httpx.Response) -> ClientError:
    """The ClientError of an error answer (its body must have been read)."""
    request_id = response.headers.get("x-request-id")
    try:
        error = response.json()["error"]
        return ClientError(str(error["message"]), status=response.status_code,
                           code=error.get("code"), param=error.get("param"),
                           request_id=request_id)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return ClientError(text, status=response.status_code, code="http_error",
                           request_id=request_id)


@dataclass(frozen=True)
class SSEMessage:
    """One Server-Sent Events message; `comment` is set for a `: keep-alive` line."""

    event: str
    data: dict[str, Any]
    id: str | None = None
    comment: str | None = None


def parse_sse(lines: Iterator[str]) -> Iterator[SSEMessage]:
    """Messages of an SSE stream (the `retry:` advice is dropped; comments are yielded)."""
    event, data, event_id = "message", "", None
    for line in lines:
        if line.startswith(":"):
            yield SSEMessage("comment", {}, comment=line[1:].strip())
        elif line == "":
            if data:
                yield SSEMessage(event, json.loads(data), event_id)
            event, data, event_id = "message", "", None
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data += value
            elif name == "id":
                event_id = value


class Client:
    """The paec API at `base_url` as the tenant whose key is `api_key`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get(KEY_ENV) or ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, exc: httpx.TransportError) -> ClientError:
        return ClientError(f"cannot reach the paec API at {self.base_url} "
                           f"({type(exc).__name__}: {exc}); is it running? Set the URL with "
                           f"--api-url or {URL_ENV}", code="connection_error")

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of a request; ClientError for an error answer or none."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object a request answers."""
        body: dict[str, Any] = self.send(method, path, **kwargs).json()
        return body

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status is below 400 (else ClientError)."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                yield response
        except httpx.ConnectError as exc:  # a later drop is the caller's to handle
            raise self._unreachable(exc) from exc

    # ---- files ----

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> dict[str, Any]:
        """Upload a local dataset file."""
        with open(path, "rb") as f:
            return self.json("POST", "/v1/files", files={"file": (path.name, f)},
                             data={"purpose": purpose})

    def list_files(self, limit: int = 100) -> dict[str, Any]:
        return self.json("GET", "/v1/files", params={"limit": limit})

    def get_file(self, file_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/files/{file_id}")

    def delete_file(self, file_id: str) -> dict[str, Any]:
        return self.json("DELETE", f"/v1/files/{file_id}")

    # ---- jobs ----

    def create_job(self, body: Mapping[str, Any], idempotency_key: str,
                   retries: int = 2) -> dict[str, Any]:
        """Create a job; a request whose answer was lost is sent again with the same key,
        so it creates one job at most."""
        for attempt in range(retries + 1):
            try:
                response = self.http.post("/v1/fine_tuning/jobs", json=dict(body),
                                          headers={IDEMPOTENCY_HEADER: idempotency_key})
            except httpx.TransportError as exc:
                if attempt == retries or isinstance(exc, httpx.ConnectError):
                    raise self._unreachable(exc) from exc
                time.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code >= 400:
                raise error_from(response)
            created: dict[str, Any] = response.json()
            return created
        raise AssertionError("unreachable")

    def list_jobs(self, limit: int = 20, metadata: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit}
        params |= {f"metadata[{k}]": v for k, v in (metadata or {}).items()}
        return self.json("GET", "/v1/fine_tuning/jobs", params=params)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/fine_tuning/jobs/{job_id}")

    def job_action(self, job_id: str, action: str) -> dict[str, Any]:
        """`cancel`, `pause` or `resume` the job; returns the job."""
        return self.json("POST", f"/v1/fine_tuning/jobs/{job_id}/{action}")

    def list_events(self, job_id: str, limit: int = 20) -> dict[str, Any]:
        return self.json("GET", f"/v1/fine_tuning/jobs/{job_id}/events",
                         params={"limit": limit})

    def metric_names(self, job_id: str) -> list[str]:
        return [str(n) for n in self.json("GET", f"/api/jobs/{job_id}/metrics/names")["data"]]

    def metrics(self, job_id: str, names: list[str] | None = None,
                max_points: int | None = None) -> dict[str, Any]:
        """`{"names", "series": {name: {"steps", "values"}}}` (downsampled to max_points)."""
        params: dict[str, str | int] = {}
        if names:
            params["names"] = ",".join(names)
        if max_points is not None:
            params["max_points"] = max_points
        return self.json("GET", f"/api/jobs/{job_id}/metrics", params=params)

    def metrics_csv(self, job_id: str, names: list[str] | None = None) -> str:
        """The job's metrics as CSV, full resolution."""
        params = {"format": "csv"} | ({"names": ",".join(names)} if names else {})
        return self.send("GET", f"/api/jobs/{job_id}/metrics", params=params).text

    def follow_events(self, job_id: str, *, after: str | None = None, reconnects: int = 5,
                      on_reconnect: Callable[[str | None, Exception], None] | None = None
                      ) -> Iterator[SSEMessage]:
        """The job's events from its SSE stream, oldest first, until its `end` message
        (yielded too). A dropped connection is opened again with `Last-Event-ID` (the last
        id seen), so no event is lost or repeated; `reconnects` drops in a row give up."""
        last_id, failures = after, 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.stream("GET", f"/api/jobs/{job_id}/stream", headers=headers,
                                 timeout=httpx.Timeout(30, read=60)) as response:
                    for message in parse_sse(response.iter_lines()):
                        failures = 0
                        if message.id is not None:
                            last_id = message.id
                        yield message
                        if message.event == "end":
                            return
                # The server ends a stream only after `end`: anything else is a drop.
                raise httpx.RemoteProtocolError("the stream ended before its end event")
            except (httpx.TransportError, ClientError) as exc:
                retryable = (not isinstance(exc, ClientError)
                             or exc.code == "connection_error" or (exc.status or 0) >= 500)
                failures += 1
                if not retryable or failures > reconnects:
                    if isinstance(exc, httpx.TransportError):
                        raise self._unreachable(exc) from exc
                    raise
                if on_reconnect is not None:
                    on_reconnect(last_id, exc)
                time.sleep(min(0.5 * 2 ** (failures - 1), 8.0))

    # ---- checkpoints ----

    def list_checkpoints(self, job_id: str, limit: int = 100) -> dict[str, Any]:
        return self.json("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints",
                         params={"limit": limit})

    def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        return self.json("GET", f"/api/checkpoints/{checkpoint_id}")

    def download_checkpoint(self, checkpoint_id: str, target: Path,
                            progress: Progress | None = None, *, contents: str = "model"
                            ) -> Path:
        """Stream an archive of the checkpoint to `target`, through `target.part`: `contents`
        "model" (weights, configs, tokenizer) or "full" (also the training state).

        A `.part` left by an interrupted download is continued with `Range` (and
        `If-Range`, so an archive that changed since is sent whole instead); the sha256 of
        the whole file is checked against the server's `x-checkpoint-sha256` before the
        `.part` becomes `target`. A mismatch deletes the `.part` (ClientError
        `checksum_mismatch`): a resumed file that went wrong must not be resumed again."""
        part = target.with_name(target.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        digest = hashlib.sha256()
        headers: dict[str, str] = {}
        if have:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            checkpoint = self.get_checkpoint(checkpoint_id)
            prefix = "model_" if contents == "model" else ""
            sha = str(checkpoint[f"{prefix}sha256"] or "")  # no such archive: 404 below
            size = int(checkpoint[f"{prefix}bytes"] or 0)
            if have == size and digest.hexdigest() == sha:  # done before; not yet renamed
                part.replace(target)
                return target
            if have >= size:  # not a prefix of this archive: start over
                part.unlink()
                have, digest = 0, hashlib.sha256()
            else:
                headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha}"'}
        try:
            with self.stream("GET", f"/api/checkpoints/{checkpoint_id}/download",
                             params={"contents": contents}, headers=headers,
                             timeout=httpx.Timeout(30, read=300)) as response:
                expected = response.headers.get("x-checkpoint-sha256", "")
                length = int(response.headers.get("content-length", "0"))
                if response.status_code != 206:  # the whole archive: start over
                    have, digest = 0, hashlib.sha256()
                total = have + length
                with open(part, "ab" if have else "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(have, total)
        except httpx.TransportError as exc:
            raise ClientError(f"the download of {checkpoint_id} was interrupted after {have} "
                              f"bytes ({type(exc).__name__}: {exc}); run the same command "
                              f"again to resume it from {part}", code="download_interrupted"
                              ) from exc
        if digest.hexdigest() != expected:
            part.unlink()
            raise ClientError(f"checkpoint {checkpoint_id}: the downloaded archive's sha256 "
                              f"{digest.hexdigest()} does not match the server's {expected}; "
                              "the partial file was deleted, download it again",
                              code="checksum_mismatch")
        part.replace(target)
        return target

    # ---- evaluations and graders ----

    def create_evaluation(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/api/evaluations", json=dict(body))

    def get_evaluation(self, evaluation_id: str) -> dict[str, Any]:
        return self.json("GET", f"/api/evaluations/{evaluation_id}")

    def run_grader(self, grader: Mapping[str, Any], sample: str,
                   item: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.json("POST", "/v1/fine_tuning/alpha/graders/run",
                         json={"grader": dict(grader), "model_sample": sample,
                               "item": None if item is None else dict(item)})
