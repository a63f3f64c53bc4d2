"""Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to 0."""

from __future__ import annotations

import math
from collections.abc import Callable

from paec.config.training import LRSchedule


def lr_lambda(schedule: LRSchedule, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimiser step `i` (0-based), for LambdaLR."""

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        if schedule is LRSchedule.CONSTANT:
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        if schedule is LRSchedule.LINEAR:
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
