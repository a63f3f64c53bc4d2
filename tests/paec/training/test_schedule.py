"""paec.training.schedule: warm-up then constant, linear or cosine decay."""

from __future__ import annotations

import pytest

from paec.config.training import LRSchedule
from paec.training.schedule import lr_lambda


def test_warmup_then_constant() -> None:
    f = lr_lambda(LRSchedule.CONSTANT, warmup=3, total=10)
    assert [f(i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_linear_and_cosine_reach_zero_at_the_end() -> None:
    lin = lr_lambda(LRSchedule.LINEAR, warmup=0, total=4)
    assert [lin(i) for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = lr_lambda(LRSchedule.COSINE, warmup=0, total=4)
    assert cos(0) == 1.0 and cos(2) == pytest.approx(0.5) and cos(4) == pytest.approx(0.0)
