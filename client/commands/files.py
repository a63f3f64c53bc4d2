"""`paec files ...`: upload, list, show and delete datasets."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.http import Client
from client.inputs import UsageError
from client.output import emit, record, table, when


def file_rows(files: Sequence[dict[str, Any]]) -> str:
    return table(("ID", "FILENAME", "BYTES", "ROWS", "STATUS", "CREATED"),
                 [(f["id"], f["filename"], f["bytes"], f.get("rows"), f["status"],
                   when(f["created_at"])) for f in files])


def cmd_files_upload(api: Client, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"no file {path}")
    obj = api.upload_file(path, args.purpose)
    emit(args, obj, lambda: file_rows([obj]))
    return 0


def cmd_files_list(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_files(args.limit)
    emit(args, obj, lambda: file_rows(obj["data"]) if obj["data"] else "no files")
    return 0


def cmd_files_show(api: Client, args: argparse.Namespace) -> int:
    obj = api.get_file(args.id)
    emit(args, obj, lambda: record([(k, when(v) if k.endswith("_at") else v)
                                    for k, v in obj.items()]))
    return 0


def cmd_files_delete(api: Client, args: argparse.Namespace) -> int:
    obj = api.delete_file(args.id)
    emit(args, obj, lambda: f"deleted {obj['id']}")
    return 0
