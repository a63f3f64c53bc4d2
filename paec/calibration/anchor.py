"""The PAEC anchor: the masked entropy the run starts from, and the floor derived from it.

The anchor H_0 is the mean of the (detached) masked entropy H_bar over the first K training
steps; the penalty is off during them. Then H_0 is frozen and the floor is
H_low = rho_min * H_0 (docs/method.md, step 5). A training step is one rollout batch: H_bar is
computed once per batch, before its update, so the anchor observes it once per step whatever
`update_epochs` (optimiser steps per batch) is. A step whose batch has no position to weight
(H_bar undefined) or no group with signal (no update) is not observed.

H_0 is training state: it is saved in every checkpoint (`state_dict`) and restored on resume
(`load_state_dict`), or a resumed run would anchor again on an already-trained policy. A
resume whose configuration changed K or rho_min is refused (`AnchorMismatch`): the saved
anchor was built under the old values, and silently keeping either would train with settings
the user did not ask for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from paec.errors import AnchorMismatch


@dataclass
class AnchorState:
    """Running anchor of one training run."""

    warmup_steps: int
    """K: training steps averaged into the anchor."""
    floor_ratio: float
    """rho_min: floor = rho_min * anchor."""
    steps_seen: int = 0
    """Training steps observed so far while warming up (stops at K)."""
    total: float = 0.0
    """Sum of the masked entropies observed while warming up."""
    anchor: float | None = None
    """H_0, set once K steps were observed; None while warming up."""

    @property
    def active(self) -> bool:
        """Whether the penalty is on: the anchor is frozen."""
        return self.anchor is not None

    @property
    def floor(self) -> float | None:
        """H_low = rho_min * H_0, or None while warming up (penalty off)."""
        return None if self.anchor is None else self.floor_ratio * self.anchor

    def observe(self, masked_entropy: float) -> None:
        """Record one training step's detached H_bar; call it after the step's update, once
        per training step (not per micro-batch or update epoch). Does nothing once the anchor
        is frozen."""
        if self.anchor is not None:
            return
        if not math.isfinite(masked_entropy):
            raise ValueError(f"masked entropy must be finite, got {masked_entropy}")
        self.total += masked_entropy
        self.steps_seen += 1
        if self.steps_seen >= self.warmup_steps:
            self.anchor = self.total / self.steps_seen

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        return {"warmup_steps": self.warmup_steps, "floor_ratio": self.floor_ratio,
                "steps_seen": self.steps_seen, "total": self.total, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict` into an anchor built from the run's
        configuration; raises `AnchorMismatch`, naming the field, if K or rho_min differ."""
        for field, saved, current in (
            ("anchor_steps", int(state["warmup_steps"]), self.warmup_steps),
            ("floor_ratio", float(state["floor_ratio"]), self.floor_ratio),
        ):
            if saved != current:
                raise AnchorMismatch(
                    f"PAECConfig.{field} is {current!r} but the checkpoint's anchor was built "
                    f"with {saved!r}: resume with {field}={saved!r}, or start a new run from "
                    "the checkpoint as its model")
        self.steps_seen = int(state["steps_seen"])
        self.total = float(state["total"])
        self.anchor = None if state["anchor"] is None else float(state["anchor"])
