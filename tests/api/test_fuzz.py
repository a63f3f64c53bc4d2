"""The whole API fuzzed from its own OpenAPI schema (issue 15): schemathesis against the live
server over HTTP, with a tenant's key, every check on (`--checks all`: no 5xx, every status
documented, every body and header as the schema says, 405s with a correct `Allow`, auth
required where the schema says so), every phase (examples, coverage, fuzzing, and stateful
where the schema has links). Deterministic (a fixed seed) and bounded to a few minutes.

Settings: tests/api/schemathesis.toml (why 400 counts as an answer to schema-valid data).

    .venv/bin/pytest tests/api/test_fuzz.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = "20261206"
MAX_EXAMPLES = "40"


@pytest.mark.slow
def test_no_request_makes_the_api_answer_5xx_or_break_its_schema(
        server: str, api_key: str, http: httpx.Client, tmp_path: Path) -> None:
    # Something to find: a dataset of this tenant, so that file routes meet a real id too.
    upload = http.post("/v1/files", data={"purpose": "fine-tune"}, files={
        "file": ("fuzz.jsonl", b'{"prompt": "1 + 1?", "answer": "2"}\n', "application/jsonl")})
    assert upload.status_code == 200, upload.text
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
         f"{server}/openapi.json", "--checks", "all", "--header",
         f"Authorization: Bearer {api_key}", "--max-examples", MAX_EXAMPLES,
         "--seed", SEED, "--workers", "1", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"})
    summary = done.stdout[done.stdout.find("SUMMARY"):]
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    # It really ran: every operation tested, and no failure reported.
    assert "Tested: " in summary and "Failures:" not in summary, summary
    tested = summary.split("Tested: ")[1].split()[0]
    assert int(tested) >= 25, summary
