"""`paec checkpoints ...`: list a job's checkpoints; download one (resumable,
sha256-checked) and unpack it: the model-only archive (weights, configs, tokenizer), or with
`--full` the full-state one (also the training state a job resumes from)."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from client.http import Client
from client.output import ProgressBar, emit, size, table, when


def cmd_checkpoints_list(api: Client, args: argparse.Namespace) -> int:
    obj = api.list_checkpoints(args.job_id)
    emit(args, obj, lambda: table(
        ("ID", "STEP", "MODEL SIZE", "FULL SIZE", "SHA256", "FULL STATE", "CREATED", "MODEL"),
        [(c["id"], c["step_number"],
          "-" if c.get("model_bytes") is None else size(c["model_bytes"]), size(c["bytes"]),
          (c.get("model_sha256") or c["sha256"])[:12], c["full_state"],
          when(c["created_at"]), c["fine_tuned_model_checkpoint"]) for c in obj["data"]])
        if obj["data"] else "no checkpoints")
    return 0


def cmd_checkpoints_download(api: Client, args: argparse.Namespace) -> int:
    checkpoint = api.get_checkpoint(args.id)
    contents = "full" if args.full else "model"
    prefix = "" if contents == "full" else "model_"
    sha256, total = checkpoint[f"{prefix}sha256"], checkpoint[f"{prefix}bytes"]
    folder = Path(args.output or args.id)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{args.id}.tar"
    bar = ProgressBar(int(total or 0), unit="bytes")
    try:
        api.download_checkpoint(args.id, archive, progress=bar.update, contents=contents)
    finally:
        bar.close()
    result = {"id": args.id, "contents": contents, "sha256": sha256, "bytes": total,
              "archive": None if not args.no_extract else str(archive), "folder": str(folder)}
    if not args.no_extract:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")  # no absolute paths, links out, devices
        archive.unlink()
    where = archive if args.no_extract else f"unpacked to {folder}"
    emit(args, result, lambda: f"{args.id}: {contents} archive, {size(int(total or 0))}, "
                               f"sha256 verified, {where}")
    return 0
