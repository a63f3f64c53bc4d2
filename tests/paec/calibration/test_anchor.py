"""paec.calibration.anchor: warm-up, freezing, floor, and checkpoint round trip."""

from __future__ import annotations

import json
import math

import pytest

from paec.calibration.anchor import AnchorState
from paec.errors import AnchorMismatch


def test_anchor_is_the_mean_of_the_first_k_steps_then_frozen() -> None:
    state = AnchorState(warmup_steps=3, floor_ratio=0.8)
    for h in (1.0, 2.0):
        state.observe(h)
        assert not state.active and state.floor is None
    state.observe(4.5)
    assert state.active and state.anchor == pytest.approx(2.5)
    assert state.floor == pytest.approx(2.0)
    state.observe(0.1)  # later steps do not move it
    assert state.anchor == pytest.approx(2.5) and state.steps_seen == 3


def test_state_round_trips_through_json_mid_warmup() -> None:
    state = AnchorState(warmup_steps=4, floor_ratio=0.7)
    state.observe(1.5)
    state.observe(0.5)
    restored = AnchorState(warmup_steps=4, floor_ratio=0.7)
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored == state
    for s in (state, restored):
        s.observe(1.0)
        s.observe(1.0)
    assert restored == state and restored.anchor == pytest.approx(1.0)
    assert restored.floor == pytest.approx(0.7)


def test_non_finite_entropy_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        AnchorState(warmup_steps=2, floor_ratio=0.8).observe(math.nan)


@pytest.mark.parametrize(("field", "warmup", "ratio"), [("anchor_steps", 2, 0.7),
                                                        ("floor_ratio", 4, 0.9)])
def test_a_resume_with_another_k_or_floor_ratio_is_refused_naming_the_field(
        field: str, warmup: int, ratio: float) -> None:
    state = AnchorState(warmup_steps=4, floor_ratio=0.7)
    state.observe(1.5)
    changed = AnchorState(warmup_steps=warmup, floor_ratio=ratio)
    with pytest.raises(AnchorMismatch, match=rf"PAECConfig\.{field} is .* built with"):
        changed.load_state_dict(state.state_dict())
    assert changed.steps_seen == 0 and changed.anchor is None  # nothing half-restored
