"""The trainer's only way out: callbacks (minGPT's `add_callback`, as hooks on a class).

The worker subclasses `Callback` to write metrics, events and checkpoints to its database and
to turn a user's cancel or pause into a `StopRequest`; the CLI uses the two defined here,
`ProgressBar` and `JsonlMetrics` (metrics.jsonl); `TrainConfig.report_to` adds those of
`paec.training.reporting` (TensorBoard, Weights & Biases).
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


class StopRequest(StrEnum):
    """What `Callback.should_stop` may ask for; the loop sees it between steps."""

    CANCEL = "cancel"
    """Stop now; keep what was written."""
    PAUSE = "pause"
    """Stop after writing a full checkpoint, to be resumed later."""


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) inside dicts, lists and tuples
    replaced by None, so that it is valid JSON (`json.dumps` would write the non-JSON
    tokens NaN and Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class Callback:
    """Hooks the trainer calls; each does nothing unless overridden."""

    def on_train_begin(self, step: int) -> None:
        """When `Trainer.train` starts (or resumes) after step `step`."""

    def on_train_end(self, step: int, status: str) -> None:
        """When `Trainer.train` ends at step `step`, however it ends: status "completed",
        "paused", "cancelled", or "failed" when it raised."""

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        """After training step `step` with its metrics and optional per-token traces."""

    def on_checkpoint(self, step: int, path: Path, sidecar: dict[str, Any]) -> None:
        """After a checkpoint folder was written (and renamed into place)."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """After an evaluation on the validation set."""

    def should_stop(self) -> StopRequest | None:
        """Checked before each step; None keeps training."""
        return None


class JsonlMetrics(Callback):
    """Appends {"step", "metrics", "traces"} and {"step", "eval"} lines to a file (and
    optionally to a stream); a non-finite number is written as null (`json_safe`)."""

    def __init__(self, path: Path, echo: TextIO | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.echo = path, echo

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self._write({"step": step, "metrics": metrics, "traces": traces})

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"step": step, "eval": metrics})

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), sort_keys=True, allow_nan=False)
        with self.path.open("a") as f:
            f.write(line + "\n")
        if self.echo is not None:
            print(line, file=self.echo, flush=True)


class ProgressBar(Callback):
    """A tqdm bar over the steps with the numbers a PAEC user watches."""

    def __init__(self, total: int, initial: int) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        show = {"reward": metrics.get("reward/mean"), "H": metrics.get("entropy"),
                "H_mask": metrics.get("entropy/masked"), "floor": metrics.get("paec/floor")}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in show.items() if v is not None})
        self.bar.update(1)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.write(f"step {step} eval: " + ", ".join(f"{k} {v:.3f}"
                                                          for k, v in metrics.items()))

    def close(self) -> None:
        self.bar.close()
