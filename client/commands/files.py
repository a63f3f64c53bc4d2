"""`paec files ...`: upload, list, show and delete datasets; convert a public dataset's
layout (GSM8K, MATH, DAPO-Math-17K, AIME, AMC: docs/datasets.md) into paec's rows.

The server accepts paec's own format only: `upload --format NAME` converts on this machine
first (`paec.formats`), so that a bad row is reported with its line and field before
anything is sent, and `convert` writes the converted file without any server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client.http import Client
from client.inputs import UsageError
from client.output import emit, record, table, when
from paec.config.training import DataFormat
from paec.errors import DatasetError
from paec.formats import DEFAULT_PROMPT_TEMPLATE, Converted, convert_file


def file_rows(files: Sequence[dict[str, Any]]) -> str:
    return table(("ID", "FILENAME", "BYTES", "ROWS", "STATUS", "CREATED"),
                 [(f["id"], f["filename"], f["bytes"], f.get("rows"), f["status"],
                   when(f["created_at"])) for f in files])


def add_format_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The options of a conversion: --format (required for `convert`), --prompt-template,
    --unique."""
    names = ", ".join(f.value for f in DataFormat)
    parser.add_argument("--format", required=required, choices=[f.value for f in DataFormat],
                        metavar="NAME", help=f"the file's layout ({names}; docs/datasets.md)"
                        + ("" if required else ": converted to paec's rows before uploading"))
    parser.add_argument("--prompt-template", metavar="TEXT",
                        help="the prompt, with {problem} where the problem goes (default: "
                        f"{DEFAULT_PROMPT_TEMPLATE!r}; DAPO rows keep their own prompt)")
    parser.add_argument("--unique", action="store_true",
                        help="leave out rows whose prompt and answer repeat an earlier row's")


@contextmanager
def converted(path: Path, args: argparse.Namespace) -> Iterator[tuple[Path, Converted]]:
    """`path` converted by --format into a temporary file of the same name (removed on
    exit); a bad row is a UsageError listing each bad row's line and field."""
    if not path.is_file():
        raise UsageError(f"no file {path}")
    with tempfile.TemporaryDirectory(prefix="paec-convert-") as folder:
        out = Path(folder) / path.name
        try:
            done = convert_file(path, out, args.format, prompt_template=args.prompt_template,
                                unique=args.unique)
        except DatasetError as exc:
            raise UsageError(f"{path} is not a valid {args.format} file: {exc}") from exc
        except OSError as exc:
            raise UsageError(f"cannot convert {path}: {exc}") from exc
        yield out, done


def cmd_files_upload(api: Client, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if getattr(args, "format", None) is None:
        if not path.is_file():
            raise UsageError(f"no file {path}")
        obj = api.upload_file(path, args.purpose)
    else:
        with converted(path, args) as (out, _):
            obj = api.upload_file(out, args.purpose)
    emit(args, obj, lambda: file_rows([obj]))
    return 0


def cmd_files_convert(api: Client, args: argparse.Namespace) -> int:
    """Write the file in paec's rows to --output (default stdout); needs no server."""
    del api  # local work only
    with converted(Path(args.path), args) as (out, done):
        if args.output in (None, "-"):
            with open(out, encoding="utf-8") as f:
                shutil.copyfileobj(f, sys.stdout)
        else:
            try:
                shutil.move(out, args.output)
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc}") from exc
    where = "stdout" if args.output in (None, "-") else args.output
    summary = {"path": where, "format": args.format, "rows": done.rows,
               "duplicates": done.duplicates}
    text = f"wrote {done.rows} rows of paec's format to {where}" + (
        f" ({done.duplicates} repeated rows left out)" if args.unique else "")
    if where == "stdout":  # the rows are the output: the summary goes to stderr
        print(text, file=sys.stderr)
    else:
        emit(args, summary, lambda: text)
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
