"""experiments.claims' floor verdict on synthetic run records: every sentence is computed
from the records, so records built to hold or to break the claim get the matching verdict."""

from __future__ import annotations

from experiments.claims import claim_floor, short_verdict
from tests.experiments.synthetic import arms as make_arms
from tests.experiments.synthetic import falling, held

SEEDS = (0, 1, 2)


def verdict(lines: list[str]) -> str:
    return next(line for line in lines if "**Verdict" in line)


def test_paec_holding_the_floor_where_grpo_collapses_is_shown_at_three_seeds() -> None:
    arms = make_arms([held(seed=s) for s in SEEDS], [falling(seed=s) for s in SEEDS])
    lines = claim_floor(arms, SEEDS)
    assert "the floor claim is shown:" in verdict(lines)
    assert any(line.startswith("- Regime:") and line.endswith("reached.") for line in lines)
    assert any("Across seeds" in line and "more than two standard errors" in line
               for line in lines)
    assert short_verdict(arms, SEEDS) == "shown"


def test_a_grpo_that_never_falls_far_below_its_floor_tests_nothing() -> None:
    shallow = [falling(end=1.95, seed=s) for s in SEEDS]  # ends 0.05 below the floor
    arms = make_arms([held(seed=s) for s in SEEDS], shallow)
    v = verdict(claim_floor(arms, SEEDS))
    assert "not shown" in v and "the regime was not reached" in v
    assert short_verdict(arms, SEEDS) == "not shown: the regime was not reached"


def test_paec_that_falls_below_its_floor_too_often_is_not_shown() -> None:
    sagging = [held(level=1.9, seed=s) for s in SEEDS]  # 0.1 below: beyond the tolerance
    v = verdict(claim_floor(make_arms(sagging, [falling(seed=s) for s in SEEDS]), SEEDS))
    assert v.count("not shown") == 1 and "fewer than 90% of the steps" in v


def test_a_margin_difference_within_two_standard_errors_is_not_shown() -> None:
    # PAEC barely above GRPO in one seed, below it in another, the same in the third.
    paec = [[*falling(seed=0)[:-1], 1.7], held(seed=1), falling(seed=2)]
    paec[1] = paec[1][:6] + [h - 0.3 for h in paec[1][6:]]
    v = verdict(claim_floor(make_arms(paec, [falling(seed=s) for s in SEEDS]), SEEDS))
    assert "not beyond two standard errors" in v


def test_missing_seeds_leave_the_claim_undecided_and_say_which() -> None:
    arms = make_arms([held(seed=s) for s in (0, 1)], [falling(seed=s) for s in (0, 1)])
    v = verdict(claim_floor(arms, SEEDS))
    assert "not decided yet: seed(s) 2 have not run" in v
    assert "every criterion holds so far" in v


def test_runs_that_never_split_are_one_run() -> None:
    same = make_arms([falling()], [falling()])
    lines = claim_floor(same, (0,))
    assert any("the two runs are one" in line for line in lines)
    assert "not shown" in verdict(lines)
