"""`paec checkpoints ...`: list a job's checkpoints; download one (resumable,
sha256-checked) and unpack it."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from client.http import Client
from client.output import ProgressBar, emit, size, table, when


def cmd_checkpoints_list(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_checkpoints(args.job_id)
    emit(args, obj, lambda: table(
        ("ID", "STEP", "SIZE", "SHA256", "FULL STATE", "CREATED", "MODEL"),
        [(c["id"], c["step_number"], size(c["bytes"]), c["sha256"][:12], c["full_state"],
          when(c["created_at"]), c["fine_tuned_model_checkpoint"]) for c in obj["data"]])
        if obj["data"] else "no checkpoints")
    return 0


def cmd_checkpoints_download(api: Client, args: argparse.Namespace) -> int:
    checkpoint = api.get_checkpoint(args.id)
    folder = Path(args.output or args.id)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{args.id}.tar"
    bar = ProgressBar(int(checkpoint["bytes"]), unit="bytes")
    try:
        api.download_checkpoint(args.id, archive, progress=bar.update)
    finally:
        bar.close()
    result = {"id": args.id, "sha256": checkpoint["sha256"], "bytes": checkpoint["bytes"],
              "archive": None if not args.no_extract else str(archive), "folder": str(folder)}
    if not args.no_extract:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")  # no absolute paths, links out, devices
        archive.unlink()
    where = archive if args.no_extract else f"unpacked to {folder}"
    emit(args, result, lambda: f"{args.id}: {size(checkpoint['bytes'])}, sha256 verified, "
                               f"{where}")
    return 0
