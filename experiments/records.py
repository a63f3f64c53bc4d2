"""Run records on disk: one JSON file per finished run, `<records>/<arm>-seed<seed>.json`, so
that each can be committed as soon as it exists; and a probe's record, kept with its final
checkpoint under `<work>/probes/`, which the real run reuses when its settings match.

A record holds the run's `config` (its `TrainConfig` as a dict), the sha256 of the problem
sets (`data`), every step's metrics (`steps`), the evaluations (`evals`), the completions
sampled for the mechanism figure (`mechanism`) and timings. A record matches a run when
both are equal, the checkpoint folder and the data file's path aside (`comparable`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.arms import Run
from experiments.settings import Settings
from paec.config.training import TrainConfig

Record = dict[str, Any]

IGNORED = ("output_dir", "train_data", "report_to")
"""Config keys that say where a run wrote, not what it did (the data is compared by its
sha256 instead; `report_to` only adds loggers, and records made before it existed lack it)."""


def record_path(folder: Path, run: Run) -> Path:
    return folder / f"{run.name}.json"


def probe_name(run: Run, s: Settings) -> str:
    return f"{run.name}-lr{s.learning_rate:g}-steps{s.steps}"


def probe_path(s: Settings, run: Run) -> Path:
    """Where `experiments.probe` leaves the record of `run` at these lr and steps (its
    final checkpoint is the folder beside it, `<same name>-ckpt`)."""
    return s.work / "probes" / f"{probe_name(run, s)}.json"


def plain(value: Any) -> Any:
    """JSON round trip, so a stored config compares equal to a fresh one."""
    return json.loads(json.dumps(value))


def comparable(config: dict[str, Any], data: str) -> dict[str, Any]:
    """What must be equal for two runs to be the same run."""
    out = {k: v for k, v in plain(config).items() if k not in IGNORED}
    out["data_sha256"] = data
    return out


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: a -> b` for every (nested) key whose value differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} -> {y!r}")
    return out


def read(path: Path) -> Record | None:
    """The record at `path`, None if there is none."""
    if not path.exists():
        return None
    record: Record = json.loads(path.read_text())
    return record


def without_new_defaults(config: dict[str, Any], stored: dict[str, Any],
                         defaults: dict[str, Any]) -> dict[str, Any]:
    """`config` less the (nested) keys that `stored` lacks and whose value is still their
    default: a field added to TrainConfig after a record was made (the issue 21 losses'
    knobs, `data_format`) defaults to what every run did before it existed, so at its default
    it changes nothing that a record says."""
    out = {}
    for k, v in config.items():
        if k not in stored:
            if k in defaults and defaults[k] == v:
                continue
            out[k] = v
        elif isinstance(v, dict) and isinstance(stored[k], dict):
            out[k] = without_new_defaults(v, stored[k], defaults.get(k) or {})
        else:
            out[k] = v
    return out


def mismatch(record: Record, config: dict[str, Any], data: str) -> list[str]:
    """Why `record` is not the run of `config` on `data` (empty: it is)."""
    stored = plain(record["config"])
    fresh = without_new_defaults(plain(config), stored, plain(TrainConfig().to_dict()))
    return differences(comparable(stored, str(record.get("data_sha256"))),
                       comparable(fresh, data))


def load_finished(path: Path, config: dict[str, Any], data: str) -> Record | None:
    """The finished record at `path` if it is this run's; None if there is none. A record of
    other settings stops the experiment: it is kept, never overwritten."""
    record = read(path)
    if record is None:
        return None
    diff = mismatch(record, config, data)
    if diff:
        raise SystemExit(f"{path} was made with other settings ({'; '.join(diff[:4])}): move "
                         "it away, or run with the settings it was made with")
    return record


def write(path: Path, record: Record) -> None:
    """Atomically: an interrupted run leaves no record, so it reruns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def finished(s: Settings, runs: list[Run]) -> dict[Run, Record]:
    """The records of `runs` that exist (without checking their settings)."""
    out = {}
    for run in runs:
        record = read(record_path(s.records, run))
        if record is not None:
            out[run] = record
    return out


def strays(s: Settings, runs: list[Run]) -> list[str]:
    """Record files in the records folder that are not runs of this plan."""
    planned = {record_path(s.records, r).name for r in runs}
    return sorted(p.name for p in s.records.glob("*.json") if p.name not in planned)
