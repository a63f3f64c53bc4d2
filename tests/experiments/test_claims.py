"""experiments.claims' verdicts on synthetic run records: every sentence is computed from the
records, so records built to hold or to break a claim must get the matching verdict."""

from __future__ import annotations

from typing import Any

from experiments.claims import claim_floor, compare
from experiments.stats import first_divergence

FLOOR = 2.0


def record(arm: str, seed: int, masked: list[float], *, penalty_weight: float = 1.0,
           anchor_steps: int = 2) -> dict[str, Any]:
    """A run whose H_bar follows `masked`; the floor is live after `anchor_steps`. Steps before
    the first dip are shared by every arm of a seed (reward and entropy equal)."""
    steps = []
    for i, h in enumerate(masked, start=1):
        s: dict[str, float] = {"entropy/masked": h, "reward/mean": 0.5, "entropy": 2.0 + seed,
                               "paec/penalty": max(0.0, FLOOR - h) ** 2 if i > anchor_steps
                               else 0.0}
        if i > anchor_steps:
            s["paec/floor"] = FLOOR
        steps.append(s)
    return {"arm": arm, "seed": seed, "steps": steps,
            "config": {"paec": {"penalty_weight": penalty_weight}}}


def diverge(rec: dict[str, Any], at: int) -> dict[str, Any]:
    """The same record, whose runs split from step `at` (the weights changed)."""
    for i, s in enumerate(rec["steps"], start=1):
        if i >= at:
            s["entropy"] += 0.01 * (1 + rec["seed"]) * (1 if rec["arm"] == "paec" else -1)
    return rec


SHARED = [2.6, 2.5, 2.4, 2.2, 1.9]  # identical until step 5, the first dip


def arms_with(paec_tail: list[float], grpo_tail: list[float]) -> dict[str, list[Any]]:
    return {
        "paec": [diverge(record("paec", s, SHARED + paec_tail), 6) for s in (0, 1)],
        "paec_no_penalty": [diverge(record("paec_no_penalty", s, SHARED + grpo_tail), 6)
                            for s in (0, 1)],
    }


def verdict(lines: list[str]) -> str:
    return next(line for line in lines if "**Verdict" in line)


def test_a_floor_held_well_beyond_the_noise_holds() -> None:
    lines = claim_floor(arms_with([2.30, 2.31, 2.29, 2.30, 2.31, 2.30],
                                  [1.80, 1.79, 1.81, 1.80, 1.78, 1.80]))
    assert "the floor claim holds here" in verdict(lines)
    assert any("the runs split at step 6" in line for line in lines)


def test_a_noisy_difference_points_the_right_way_but_is_not_shown() -> None:
    lines = claim_floor(arms_with([2.6, 1.9, 2.5, 1.95, 2.4, 2.1],
                                  [2.4, 1.8, 2.3, 1.9, 2.2, 1.98]))
    assert "points the right way but is not shown here" in verdict(lines)


def test_paec_below_its_floor_at_the_end_is_not_shown() -> None:
    lines = claim_floor(arms_with([1.7, 1.6, 1.7, 1.6, 1.7, 1.6],
                                  [2.3, 2.3, 2.3, 2.3, 2.3, 2.3]))
    v = verdict(lines)
    assert "is not shown here" in v and "PAEC's H_bar ended below its floor" in v


def test_runs_that_never_split_are_one_run() -> None:
    same = {"paec": [record("paec", 0, [2.6, 2.5, 2.4, 2.3])],
            "paec_no_penalty": [record("paec_no_penalty", 0, [2.6, 2.5, 2.4, 2.3])]}
    assert first_divergence(same["paec"][0], same["paec_no_penalty"][0]) is None
    lines = claim_floor(same)
    assert any("never changed the weights" in line for line in lines)
    assert "is not shown here" in verdict(lines)


def test_a_score_difference_within_binomial_noise_is_called_noise() -> None:
    def arm(name: str, maj: float) -> list[dict[str, Any]]:
        return [{"arm": name, "seed": 0, "evals": {"heldout": {"eval/maj@8": maj}}}]

    def maj(r: dict[str, Any]) -> float:
        return float(r["evals"]["heldout"]["eval/maj@8"])

    arms = {"a": arm("a", 0.81), "b": arm("b", 0.76)}
    line = compare(arms, "a", "b", maj, "maj@8", problems=21)
    assert line is not None and "within the noise" in line
    arms = {"a": arm("a", 0.95), "b": arm("b", 0.30)}
    line = compare(arms, "a", "b", maj, "maj@8", problems=21)
    assert line is not None and "beyond two binomial standard errors" in line
