"""experiments.comparisons on synthetic records: noise-aware comparisons of arms, and the
penalty weight the sweep favours, computed both ways."""

from __future__ import annotations

from typing import Any

from experiments.comparisons import claim_sweep, compare
from tests.experiments.synthetic import falling, held, record


def maj(r: dict[str, Any]) -> float:
    return float(r["evals"]["heldout"]["eval/maj@8"])


def test_a_score_difference_within_binomial_noise_is_called_noise() -> None:
    arms = {"a": [record("a", 0, falling(), maj=0.55)], "b": [record("b", 0, falling(), maj=0.5)]}
    line = compare(arms, "a", "b", maj, "maj@8", problems=100)
    assert line is not None and "within the noise" in line
    arms["a"] = [record("a", 0, falling(), maj=0.8)]
    line = compare(arms, "a", "b", maj, "maj@8", problems=100)
    assert line is not None and "beyond two binomial standard errors" in line


def sweep(weights_paths: dict[float, tuple[list[float], float]]) -> dict[str, list[Any]]:
    out = {}
    for w, (path, score) in weights_paths.items():
        arm = "paec" if w == 1.0 else f"paec_w{w:g}"
        out[arm] = [record(arm, 0, path, weight=w, maj=score)]
    return out


def test_the_smallest_weight_that_holds_the_floor_without_losing_accuracy_is_favoured() -> None:
    arms = sweep({0.3: (falling(), 0.50), 1.0: (held(), 0.52), 3.0: (held(), 0.55),
                  10.0: (held(), 0.20)})
    lines = claim_sweep(arms, 8, {"heldout": 100})
    assert any(line.startswith("| 0.3 | ") for line in lines)
    assert "Weights that held the floor: 1, 3, 10." in lines[-1]
    assert "the best: **1**." in lines[-1]


def test_accuracy_lost_beyond_the_noise_moves_the_choice_up() -> None:
    arms = sweep({1.0: (held(), 0.20), 3.0: (held(), 0.60)})
    assert "the best: **3**." in claim_sweep(arms, 8, {"heldout": 100})[-1]


def test_no_weight_holding_the_floor_favours_none() -> None:
    arms = sweep({1.0: (falling(), 0.5), 3.0: (held(level=1.94), 0.5)})  # half kept
    last = claim_sweep(arms, 8, {"heldout": 100})[-1]
    assert "No weight held the floor" in last and "weight 3" in last
