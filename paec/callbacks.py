"""The trainer's only way out: callbacks (minGPT's `add_callback`, as hooks on a class).

The worker subclasses `Callback` to write metrics, events and checkpoints to its database and
to turn a user's cancel or pause into a `StopRequest`; the CLI uses it for its progress bar
and metrics.jsonl.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any


class StopRequest(StrEnum):
    """What `Callback.should_stop` may ask for; the loop sees it between steps."""

    CANCEL = "cancel"
    """Stop now; keep what was written."""
    PAUSE = "pause"
    """Stop after writing a full checkpoint, to be resumed later."""


class Callback:
    """Hooks the trainer calls; each does nothing unless overridden."""

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
