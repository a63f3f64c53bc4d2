"""The operator's admin command, run as a process on the embedded SQLite default: migrate,
create a key, use it over HTTP, revoke it, and see the API refuse it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from api.app import create_app
from store.settings import Settings
from tests.service import ROOT, ThreadedServer


def admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAEC_DATA_DIR": str(data)}
    env.pop("PAEC_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "store.admin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_key_created_by_the_admin_command_works_until_revoked(tmp_path: Path) -> None:
    assert admin(tmp_path, "migrate").returncode == 0
    made = admin(tmp_path, "create-key", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["api_key"].startswith("paec-")
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/14",
                        auth_cache_s=0)
    with ThreadedServer(create_app(settings)) as server:
        auth = {"Authorization": f"Bearer {key['api_key']}"}
        assert httpx.get(server.url + "/v1/files", headers=auth).status_code == 200
        listed = json.loads(admin(tmp_path, "list-keys", "--tenant", "acme").stdout)
        assert [k["key_id"] for k in listed] == [key["key_id"]]
        assert key["api_key"] not in json.dumps(listed)  # secrets are never shown again
        assert admin(tmp_path, "revoke-key", key["key_id"]).returncode == 0
        refused = httpx.get(server.url + "/v1/files", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_revoking_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    assert admin(tmp_path, "migrate").returncode == 0
    out = admin(tmp_path, "revoke-key", "key_nope")
    assert out.returncode == 1 and "no API key" in out.stderr


def test_print_key_prints_the_key_alone_for_the_shell(tmp_path: Path) -> None:
    assert admin(tmp_path, "migrate").returncode == 0
    made = admin(tmp_path, "create-key", "--tenant", "acme", "--print-key")
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("\n") == 1 and made.stdout.startswith("paec-")
    listed = json.loads(admin(tmp_path, "list-keys", "--tenant", "acme").stdout)
    assert len(listed) == 1 and made.stdout.strip().startswith(listed[0]["prefix"])
