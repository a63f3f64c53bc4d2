"""The whole API fuzzed from its own OpenAPI schema: schemathesis against the live server over
HTTP, with a tenant's key, every check on (`--checks all`: no 5xx, schema-valid requests
accepted and schema-violating ones refused, every status documented, every body and header
as the schema says, 405s with a correct `Allow`, auth required where the schema says so),
every phase (examples, coverage, fuzzing, and stateful from the links it infers), and no
"schema validation mismatch" warning (an operation that refuses what its schema accepts).
Deterministic (a fixed seed) and bounded to a few minutes.

Settings: tests/api/schemathesis.toml (the few operations where a schema-valid request can
still be a 400, and why).

    .venv/bin/pytest tests/api/test_fuzz.py -q
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.schemas.jobs import EXAMPLE_FILE
from api.schemas.permissions import EXAMPLE_PROJECT
from store.db import transaction
from store.models import Checkpoint, File, Tenant
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_job

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = "20261206"
MAX_EXAMPLES = "40"
DATASET = b'{"prompt": "What is 1 + 1?", "answer": "2"}\n' * 4
CHECKPOINT = "ftckpt_abc123"
CHECKPOINT_NAME = "ft:smollm2-135m-instruct:fuzz:paec:ftjob-abc123:ckpt-step-1"
"""The checkpoint the fuzzer is given (schemathesis.toml names it too)."""


def add_example_dataset(sessions: sessionmaker[Session], settings: Settings,
                        tenant_id: str) -> None:
    """The dataset the schema's example job request trains on (`EXAMPLE_FILE`), so that the
    example, and the bodies the fuzzer builds from it, can be accepted."""
    key = f"files/{tenant_id}/{EXAMPLE_FILE}.jsonl"
    LocalStorage(settings.resolved_artifacts_dir).put_bytes(key, DATASET)
    with transaction(sessions) as session:
        session.add(File(id=EXAMPLE_FILE, tenant_id=tenant_id, filename="train.jsonl",
                         purpose="fine-tune", bytes=len(DATASET),
                         sha256=hashlib.sha256(DATASET).hexdigest(), rows=4,
                         status="processed", storage_key=key))


def add_checkpoint(sessions: sessionmaker[Session], settings: Settings,
                   tenant_id: str) -> None:
    """A checkpoint of the tenant (`CHECKPOINT`, with an archive to download), and the project
    of the schema's example permission request (`EXAMPLE_PROJECT`) to share it with."""
    job_id = make_job(sessions, tenant_id, status="succeeded")
    archive = bytes(range(256)) * 8
    key = f"checkpoints/{job_id}/step-1.tar"
    LocalStorage(settings.resolved_artifacts_dir).put_bytes(key, archive)
    with transaction(sessions) as session:
        session.add(Checkpoint(id=CHECKPOINT, job_id=job_id, step=1, model_name=CHECKPOINT_NAME,
                               storage_key=key, size=len(archive),
                               sha256=hashlib.sha256(archive).hexdigest(), full_state=False,
                               metrics={"train_reward_mean": 0.5}))
        session.add(Tenant(id=EXAMPLE_PROJECT, name=f"fuzz-project-{tenant_id}"))


@pytest.mark.slow
def test_no_request_makes_the_api_answer_5xx_or_break_its_schema(
        server: str, tenant: tuple[str, str], sessions: sessionmaker[Session],
        service_settings: Settings, tmp_path: Path) -> None:
    add_example_dataset(sessions, service_settings, tenant[0])
    add_checkpoint(sessions, service_settings, tenant[0])
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
         f"{server}/openapi.json", "--checks", "all", "--header",
         f"Authorization: Bearer {tenant[1]}", "--max-examples", MAX_EXAMPLES,
         "--seed", SEED, "--workers", "1", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"})
    summary = done.stdout[done.stdout.find("SUMMARY"):]
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    # It really ran: every operation tested, no failure and no schema mismatch reported.
    assert "Tested: " in summary and "Failures:" not in summary, summary
    assert "mismatch" not in done.stdout, done.stdout[-8000:]
    tested = summary.split("Tested: ")[1].split()[0]
    assert int(tested) >= 30, summary
