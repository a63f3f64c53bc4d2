"""A `paec jobs submit` config file (docs/cli.md) turned into the create-job request: its
keys and `--set key=value` overrides checked and applied to the hyperparameters, then its
`*_path` datasets uploaded (and deleted again when the job is not created: `discard`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.http import Client, ClientError
from client.inputs import UsageError, parse_value

CONFIG_KEYS = ("model", "training_file", "training_path", "validation_file",
               "validation_path", "grader", "hyperparameters", "suffix", "seed", "metadata")
"""The keys of a `jobs submit` config file (docs/cli.md)."""


def apply_set(hyper: dict[str, Any], assignment: str) -> None:
    """`a.b=v`: hyper["a"]["b"] = v (parsed by parse_value), creating objects on the way."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise UsageError(f"--set takes key=value (dotted keys like paec.tau=0.5), got "
                         f"{assignment!r}")
    *parents, leaf = key.split(".")
    node = hyper
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: {part} is {child!r}, not an object")
        node = child
    node[leaf] = parse_value(value)


def dataset_paths(config: dict[str, Any], base: Path) -> dict[str, Path]:
    """The local files a config asks to upload, by request key (`training_file`, ...),
    checked to exist (paths relative to `base`)."""
    paths: dict[str, Path] = {}
    for kind in ("training", "validation"):
        if f"{kind}_file" in config and f"{kind}_path" in config:
            raise UsageError(f"give {kind}_file (an uploaded file id) or {kind}_path (a "
                             "local file to upload), not both")
        if f"{kind}_path" in config:
            path = (base / str(config[f"{kind}_path"])).resolve()
            if not path.is_file():
                raise UsageError(f"{kind}_path: no file {path}")
            paths[f"{kind}_file"] = path
    return paths


def discard(api: Client, file_ids: Sequence[str], why: str) -> None:
    """Delete files this command uploaded for a job that was not created, so that a refused
    submit leaves no orphan file behind (issue 19)."""
    for file_id in file_ids:
        try:
            api.delete_file(file_id)
            print(f"deleted {file_id} again ({why})", file=sys.stderr)
        except ClientError as exc:
            print(f"could not delete {file_id} ({exc}); `paec files delete {file_id}` "
                  "removes it", file=sys.stderr)


def upload_datasets(api: Client, paths: dict[str, Path]) -> dict[str, str]:
    """Upload each path once; {request key: file id}. A failed upload deletes the ones
    before it."""
    uploaded: dict[Path, str] = {}
    try:
        for path in paths.values():
            if path not in uploaded:
                uploaded[path] = api.upload_file(path)["id"]
                print(f"uploaded {path} as {uploaded[path]}", file=sys.stderr)
    except ClientError:
        discard(api, list(uploaded.values()), "the next upload failed")
        raise
    return {key: uploaded[path] for key, path in paths.items()}


def job_body(api: Client, config: dict[str, Any], base: Path, sets: Sequence[str]
             ) -> tuple[dict[str, Any], list[str]]:
    """The create-job request of a config file, and the ids of the files uploaded for it:
    the config and the --set overrides are checked first, the `*_path` datasets uploaded
    last."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in the job config; it accepts "
                         + ", ".join(CONFIG_KEYS))
    body: dict[str, Any] = {k: config[k] for k in ("model", "suffix", "seed", "metadata")
                            if k in config}
    hyper = dict(config.get("hyperparameters") or {})
    for assignment in sets:
        apply_set(hyper, assignment)
    reinforcement: dict[str, Any] = {"hyperparameters": hyper}
    if "grader" in config:
        reinforcement["grader"] = config["grader"]
    body["method"] = {"type": "reinforcement", "reinforcement": reinforcement}
    paths = dataset_paths(config, base)
    body |= {key: config[key] for key in ("training_file", "validation_file")
             if key in config}
    files = upload_datasets(api, paths)
    body |= files
    return body, sorted(set(files.values()))
