"""Checkpoints: the model (safetensors via save_pretrained), its tokenizer, the full training
state, and a JSON sidecar with the step, the metrics and the sha256 of every file.

    <output_dir>/checkpoint-000012/
        model.safetensors, config.json, generation_config.json, tokenizer files
        training_state.pt      optimiser, scheduler, step, data cursor, RNG, PAEC anchor
        checkpoint.json        {"step", "metrics", "files": {name: {"sha256", "bytes"}}}

A checkpoint is written into a temporary sibling folder and renamed into place, so a crash
never leaves a half-written one under the final name. The model folder loads with plain
`AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

SIDECAR = "checkpoint.json"
STATE = "training_state.pt"
PREFIX = "checkpoint-"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return output_dir / f"{PREFIX}{step:06d}"


def save_checkpoint(output_dir: Path, step: int, *, model: Any, tokenizer: Any,
                    state: dict[str, Any], metrics: dict[str, float],
                    weights: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint of `step` atomically and return its folder; `weights`: the
    model's state dict when the model's own parameters are shards (fsdp)."""
    final = checkpoint_dir(output_dir, step)
    tmp = output_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE)
        files = {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        sidecar = {"format": 1, "step": step, "metrics": metrics, "files": files}
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True))
        if final.exists():  # a replayed step after a crash: the new one replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint folder."""
    data: dict[str, Any] = json.loads((path / SIDECAR).read_text())
    return data


def verify_checkpoint(path: Path) -> list[str]:
    """Names of the files whose size or sha256 differ from the sidecar (empty: intact)."""
    bad = []
    for name, info in read_sidecar(path)["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != info["bytes"] or sha256(f) != info["sha256"]:
            bad.append(name)
    return bad


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The training state saved with a checkpoint (tensors only, no pickled code)."""
    state: dict[str, Any] = torch.load(path / STATE, map_location=device, weights_only=True)
    return state


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under `output_dir`, if any."""
    done = [p for p in output_dir.glob(f"{PREFIX}*") if (p / SIDECAR).is_file()]
    return max(done, key=lambda p: p.name) if done else None


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
