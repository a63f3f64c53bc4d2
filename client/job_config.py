"""A `paec jobs submit` config file (docs/cli.md) turned into the create-job request: its
keys checked, `*_path` datasets uploaded first, `--set key=value` overrides applied to the
hyperparameters."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.http import Client
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


def dataset_files(api: Client, config: dict[str, Any], base: Path) -> dict[str, str]:
    """`training_file` / `validation_file` of the request: the ids given, or those of the
    `*_path` files (relative to `base`) uploaded now, each file once."""
    files: dict[str, str] = {}
    uploaded: dict[Path, str] = {}
    for kind in ("training", "validation"):
        if f"{kind}_file" in config and f"{kind}_path" in config:
            raise UsageError(f"give {kind}_file (an uploaded file id) or {kind}_path (a "
                             "local file to upload), not both")
        if f"{kind}_path" in config:
            path = (base / str(config[f"{kind}_path"])).resolve()
            if path not in uploaded:
                if not path.is_file():
                    raise UsageError(f"{kind}_path: no file {path}")
                uploaded[path] = api.upload_file(path)["id"]
                print(f"uploaded {path} as {uploaded[path]}", file=sys.stderr)
            files[f"{kind}_file"] = uploaded[path]
        elif f"{kind}_file" in config:
            files[f"{kind}_file"] = config[f"{kind}_file"]
    return files


def job_body(api: Client, config: dict[str, Any], base: Path, sets: Sequence[str]
             ) -> dict[str, Any]:
    """The create-job request of a config file; `*_path` datasets are uploaded first."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in the job config; it accepts "
                         + ", ".join(CONFIG_KEYS))
    body: dict[str, Any] = {k: config[k] for k in ("model", "suffix", "seed", "metadata")
                            if k in config}
    body |= dataset_files(api, config, base)
    hyper = dict(config.get("hyperparameters") or {})
    for assignment in sets:
        apply_set(hyper, assignment)
    reinforcement: dict[str, Any] = {"hyperparameters": hyper}
    if "grader" in config:
        reinforcement["grader"] = config["grader"]
    body["method"] = {"type": "reinforcement", "reinforcement": reinforcement}
    return body
