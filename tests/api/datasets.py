"""Datasets and helpers the file tests share (tests/api/test_file_uploads.py,
tests/api/test_files.py): rows of both formats, their JSONL, and what a tenant has stored."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.models import File
from store.storage import LocalStorage

MESSAGES_ROWS = [
    {"messages": [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": "What is 2 + 2?"}], "answer": "4"},
    {"messages": [{"role": "user", "content": "What is 3 * 3?"}], "answer": 9},
]
PROMPT_ROWS = [{"prompt": "What is 1 + 1?", "answer": "2"},
               {"prompt": "What is 5 - 3?", "answer": "2", "level": "easy"},
               {"prompt": "What is 2 ** 3?", "answer": 8}]


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tenant_folder(storage: LocalStorage, tenant_id: str) -> Path:
    return storage.root / "files" / tenant_id


def stored_names(storage: LocalStorage, tenant_id: str) -> list[str]:
    folder = tenant_folder(storage, tenant_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def row_count(sessions: sessionmaker[Session], tenant_id: str) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(File)
                              .where(File.tenant_id == tenant_id)) or 0


def upload(http: httpx.Client, name: str, data: bytes, **fields: str) -> httpx.Response:
    return http.post("/v1/files", files={"file": (name, data)},
                     data={"purpose": "fine-tune", **fields})
