"""The PAEC anchor: the masked entropy the run starts from, and the floor derived from it.

The anchor H_0 is the mean of the (detached) masked entropy H_bar over the first K optimiser
steps; the penalty is off during them. Then H_0 is frozen and the floor is
H_low = rho_min * H_0 (paec-method.md, step 5). H_0 is training state: it is saved in every
checkpoint (`state_dict`) and restored on resume (`load_state_dict`), or a resumed run would
anchor again on an already-trained policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class AnchorState:
    """Running anchor of one training run."""

    warmup_steps: int
    """K: optimiser steps averaged into the anchor."""
    floor_ratio: float
    """rho_min: floor = rho_min * anchor."""
    steps_seen: int = 0
    """Optimiser steps observed so far while warming up (stops at K)."""
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
        """Record one optimiser step's detached H_bar; call it after the step's update, once
        per optimiser step (not per micro-batch). Does nothing once the anchor is frozen."""
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
        """Restore the state written by `state_dict`."""
        self.warmup_steps = int(state["warmup_steps"])
        self.floor_ratio = float(state["floor_ratio"])
        self.steps_seen = int(state["steps_seen"])
        self.total = float(state["total"])
        self.anchor = None if state["anchor"] is None else float(state["anchor"])
