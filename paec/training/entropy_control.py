"""EntroPIC's PI controller (arXiv 2511.15248; yk7333/EntroPIC `dp_actor.py`): the weight
alpha of its extra loss term, from the policy's entropy H and a target H*.

    e_k     = H_k - H*                                   H_k: the entropy of update k
    alpha_k = clip(K_p e_k + K_i I_{k-1}, -1, 1)        I_{k-1} = e_1 + ... + e_{k-1}
    I_k     = I_{k-1} + e_k

As in the authors' code, the integral used by an update holds the errors of the updates
before it, not its own. Their actor runs the law once per micro-batch, on that micro-batch's
entropy, adding the error times its share of the mini-batch to the integral; here it runs
once per training step, on the whole optimisation batch's entropy, so that alpha does not
depend on how the batch is cut into micro-batches. With their setting (one mini-batch per
rollout batch) the integral receives the same batch mean each step. The state (I, and the
last alpha) is training state: the trainer saves it in every checkpoint and restores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EntropyController:
    """The PI controller's gains, target and state."""

    kp: float  # K_p
    ki: float  # K_i
    target: float  # H*
    integral: float = 0.0  # I: the sum of the errors of the updates so far
    alpha: float = 0.0  # the last alpha given

    def update(self, entropy: float) -> float:
        """alpha for an update whose policy has entropy `entropy`; then the error joins the
        integral."""
        if not math.isfinite(entropy):
            raise ValueError(f"entropy must be finite, got {entropy!r}")
        error = entropy - self.target
        self.alpha = min(1.0, max(-1.0, self.kp * error + self.ki * self.integral))
        self.integral += error
        return self.alpha

    def metrics(self) -> dict[str, float]:
        """`policy/entropic_alpha` and `policy/entropic_integral` (docs/metrics.md)."""
        return {"policy/entropic_alpha": self.alpha, "policy/entropic_integral": self.integral}

    def state_dict(self) -> dict[str, float]:
        """The state a checkpoint keeps (floats only: loads with `weights_only=True`)."""
        return {"integral": self.integral, "alpha": self.alpha}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore `state_dict`'s output."""
        self.integral = float(state["integral"])
        self.alpha = float(state["alpha"])
