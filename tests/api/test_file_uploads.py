"""/v1/files uploads over real HTTP: the official client for the happy paths, httpx for the
edges. A bad or oversize upload must leave nothing behind: no row and no bytes in artifact
storage; a killed upload's spool is removed by the next one. Listing, reading, deleting,
holds and expiry are in test_files.py."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import files
from store.db import transaction
from store.models import File
from store.settings import Settings
from store.storage import LocalStorage
from tests.api.datasets import (
    MESSAGES_ROWS,
    PROMPT_ROWS,
    jsonl,
    row_count,
    stored_names,
    upload,
    write,
)
from tests.service import ROOT


def test_messages_dataset_uploads_as_processed_with_its_row_count(
        openai_client: OpenAI, tmp_path: Path, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session]) -> None:
    data = jsonl(MESSAGES_ROWS)
    with open(write(tmp_path, "train.jsonl", data), "rb") as fh:
        created = openai_client.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.object, created.purpose, created.status) == ("file", "fine-tune",
                                                                 "processed")
    assert (created.filename, created.bytes) == ("train.jsonl", len(data))
    assert created.expires_at is None
    assert created.model_extra is not None and created.model_extra["rows"] == 2
    stored = storage.path(f"files/{tenant[0]}/{created.id}.jsonl")
    assert stored.read_bytes() == data
    with sessions() as session:
        row = files.get_file(session, tenant[0], created.id)
    assert row.sha256 == hashlib.sha256(data).hexdigest()


def test_prompt_answer_dataset_uploads_and_downloads_byte_for_byte(
        openai_client: OpenAI, tmp_path: Path) -> None:
    data = jsonl(PROMPT_ROWS)
    with open(write(tmp_path, "prompts.jsonl", data), "rb") as fh:
        created = openai_client.files.create(file=fh, purpose="fine-tune")
    assert created.model_extra is not None and created.model_extra["rows"] == 3
    assert openai_client.files.retrieve(created.id).model_dump() == created.model_dump()
    assert openai_client.files.content(created.id).read() == data


def test_expires_after_sets_expires_at_from_created_at(openai_client: OpenAI,
                                                       tmp_path: Path) -> None:
    with open(write(tmp_path, "train.jsonl", jsonl(PROMPT_ROWS)), "rb") as fh:
        created = openai_client.files.create(
            file=fh, purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 7200})
    assert created.expires_at == created.created_at + 7200


@pytest.mark.parametrize(("fields", "param"), [
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
     "expires_after.seconds"),
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
     "expires_after.anchor"),
    ({"expires_after[seconds]": "soon", "expires_after[anchor]": "created_at"},
     "expires_after.seconds"),
])
def test_bad_expires_after_is_400_naming_the_field(http: httpx.Client, fields: dict[str, str],
                                                  param: str) -> None:
    r = upload(http, "train.jsonl", jsonl(PROMPT_ROWS), **fields)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_bad_rows_are_listed_by_line_and_field_and_nothing_is_stored(
        openai_client: OpenAI, tmp_path: Path, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session]) -> None:
    data = (jsonl(PROMPT_ROWS[:1])
            + b'{"messages": [{"role": "robot", "content": "hi"}]}\n'
            + b"not json\n"
            + jsonl(PROMPT_ROWS[1:]))
    with open(write(tmp_path, "bad.jsonl", data), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="fine-tune")
    assert (caught.value.code, caught.value.param) == ("invalid_file", "file")
    message = caught.value.message
    assert "line 2: messages[0].role" in message
    assert "line 3: invalid JSON" in message
    assert "line 1" not in message and "line 4" not in message
    assert row_count(sessions, tenant[0]) == 0
    assert stored_names(storage, tenant[0]) == []


def test_a_large_upload_is_validated_apart_with_the_same_answers(
        http: httpx.Client, tenant: tuple[str, str], storage: LocalStorage,
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    # Past files.VALIDATE_APART_BYTES the parse runs in a child process, so that a big
    # upload's CPU does not hold the API's GIL (bench/load.py): the same rows counted, the
    # same row errors by line, nothing stored for a bad one.
    # (The test server's upload limit is 2 MB: the threshold comes down to 64 KiB.)
    monkeypatch.setattr(files, "VALIDATE_APART_BYTES", 64 * 1024)
    row = b'{"prompt": "What is 2 + 2? Think it through step by step.", "answer": "4"}\n'
    count = files.VALIDATE_APART_BYTES // len(row) + 100
    apart: list[tuple[bool, int | str]] = []
    real = files._validate_apart

    def spy(path: str) -> tuple[bool, int | str]:
        apart.append(real(path))
        return apart[-1]

    monkeypatch.setattr(files, "_validate_apart", spy)
    good = http.post("/v1/files", data={"purpose": "fine-tune"},
                     files={"file": ("big.jsonl", row * count, "application/jsonl")})
    assert good.status_code == 200, good.text
    assert good.json()["status"] == "processed" and apart == [(True, count)]
    with transaction(sessions) as session:
        assert session.scalars(select(File.rows).where(File.id == good.json()["id"])).one() \
            == count
    bad = http.post("/v1/files", data={"purpose": "fine-tune"},
                    files={"file": ("bad.jsonl", row * count + b"not json\n",
                                    "application/jsonl")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_file"
    assert f"line {count + 1}: invalid JSON" in bad.json()["error"]["message"]
    assert len(apart) == 2 and apart[1][0] is False
    small = http.post("/v1/files", data={"purpose": "fine-tune"},
                      files={"file": ("small.jsonl", row, "application/jsonl")})
    assert small.status_code == 200 and len(apart) == 2  # small ones stay in the thread
    assert row_count(sessions, tenant[0]) == 2


def test_empty_file_is_an_invalid_file(http: httpx.Client, tenant: tuple[str, str],
                                       sessions: sessionmaker[Session]) -> None:
    r = upload(http, "empty.jsonl", b"\n\n")
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_file", "file")
    assert "no rows" in r.json()["error"]["message"]
    assert row_count(sessions, tenant[0]) == 0


def test_file_just_over_the_limit_is_413_and_nothing_is_stored(
        http: httpx.Client, service_settings: Settings, tenant: tuple[str, str],
        storage: LocalStorage, sessions: sessionmaker[Session]) -> None:
    # Over max_upload_bytes but under the Content-Length pre-check's slack: the service's
    # chunked read is what refuses it.
    line = jsonl(PROMPT_ROWS[:1])
    data = line * (service_settings.max_upload_bytes // len(line) + 10)
    assert service_settings.max_upload_bytes < len(data) < (service_settings.max_upload_bytes
                                                             + 32 * 1024)
    r = upload(http, "big.jsonl", data)
    assert r.status_code == 413
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("payload_too_large",
                                                                       "file")
    assert row_count(sessions, tenant[0]) == 0
    assert stored_names(storage, tenant[0]) == []


def test_chunked_upload_without_content_length_is_cut_off_at_the_limit(
        http: httpx.Client, service_settings: Settings, tenant: tuple[str, str],
        sessions: sessionmaker[Session]) -> None:
    boundary = "paecboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f'fine-tune\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.jsonl"\r\n\r\n').encode()
    chunk = jsonl(PROMPT_ROWS[:1]) * 2000
    n_chunks = (service_settings.max_upload_bytes + 128 * 1024) // len(chunk) + 1

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(n_chunks):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = http.post("/v1/files", content=body(),
                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    # Refused while the body arrived, not after spooling all of it for the service to read.
    assert r.json()["error"]["message"].startswith("request body is over the limit")
    assert row_count(sessions, tenant[0]) == 0


def test_purpose_other_than_fine_tune_is_400(openai_client: OpenAI, tmp_path: Path) -> None:
    with open(write(tmp_path, "train.jsonl", jsonl(PROMPT_ROWS)), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="assistants")
    assert caught.value.param == "purpose"


def test_filename_without_jsonl_extension_is_400(openai_client: OpenAI, tmp_path: Path,
                                                 tenant: tuple[str, str],
                                                 sessions: sessionmaker[Session]) -> None:
    with open(write(tmp_path, "train.csv", jsonl(PROMPT_ROWS)), "rb") as fh, \
            pytest.raises(openai.BadRequestError) as caught:
        openai_client.files.create(file=fh, purpose="fine-tune")
    assert caught.value.param == "file"
    assert "train.csv" in caught.value.message
    assert row_count(sessions, tenant[0]) == 0


def test_upload_without_a_file_field_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/files", data={"purpose": "fine-tune"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "file"


def test_upload_without_a_key_is_401(server: str) -> None:
    r = httpx.post(server + "/v1/files", files={"file": ("t.jsonl", jsonl(PROMPT_ROWS))},
                   data={"purpose": "fine-tune"})
    assert r.status_code == 401


# ---- upload spools ----

_BLOCKED_UPLOAD = """
import sys, time
from pathlib import Path
from store import files

class Stalled:  # a client that sends a first chunk, then nothing
    sent = False
    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            return b'{"prompt": "What is 1 + 1?", "answer": "2"}\\n' * 1000
        time.sleep(3600)
        return b""

files.create_file(None, None, "org-x", filename="big.jsonl", purpose="fine-tune",
                  stream=Stalled(), max_bytes=10**9, spool_dir=Path(sys.argv[1]))
"""


def test_the_spool_of_a_killed_upload_is_removed_by_the_next_upload(
        http: httpx.Client, service_settings: Settings) -> None:
    spool_dir = service_settings.resolved_spool_dir
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_UPLOAD, str(spool_dir)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in spool_dir.glob("paec-upload-*.jsonl") if p.stat().st_size]:
            assert time.monotonic() < deadline and proc.poll() is None, "no spool appeared"
            time.sleep(0.1)
        (spool,) = spool_dir.glob("paec-upload-*.jsonl")
        assert spool.is_relative_to(service_settings.data_dir)  # not the system temp folder
        old = time.time() - 3600
        os.utime(spool, (old, old))
        assert files.remove_orphan_spools(spool_dir) == []  # in use: locked by its upload
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert spool.exists()  # what a SIGKILL leaves behind
    assert upload(http, "train.jsonl", jsonl(PROMPT_ROWS)).status_code == 200
    assert not spool.exists()
    assert list(spool_dir.iterdir()) == []  # the upload's own spool went too


def test_a_young_or_locked_spool_is_not_taken_for_an_orphan(tmp_path: Path) -> None:
    young = tmp_path / "paec-upload-young.jsonl"
    young.write_bytes(b"{}")
    locked = tmp_path / "paec-upload-locked.jsonl"
    locked.write_bytes(b"{}")
    old = time.time() - 3600
    os.utime(locked, (old, old))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert files.remove_orphan_spools(tmp_path) == []
    assert files.remove_orphan_spools(tmp_path) == [locked]
    assert young.exists() and not locked.exists()
