"""experiments.budget: a run's cost from its steps and evaluation completions, at assumed
speeds until records measure them."""

from __future__ import annotations

from pathlib import Path

from experiments.arms import Run, plan
from experiments.budget import EVAL_S, MECHANISM_S, STEP_S, completions, run_seconds, speeds
from tests.experiments.synthetic import falling, record, smoke_settings


def test_the_main_arms_and_the_untrained_policy_are_evaluated_on_both_sets(
        tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, heldout_size=100, hard_size=100, k=8)
    assert completions(s, Run("grpo", 0)) == completions(s, Run("base", 0)) == 1600
    assert completions(s, Run("paec_w3", 0)) == completions(s, Run("paec_no_mask", 0)) == 800


def test_a_run_costs_its_steps_and_its_completions(tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, heldout_size=100, hard_size=100, k=8, steps=32)
    assert run_seconds(s, Run("paec", 1), 25.0, 0.3) == 32 * 25.0 + 1600 * 0.3 + MECHANISM_S
    assert run_seconds(s, Run("base", 0), 25.0, 0.3) == 1600 * 0.3 + MECHANISM_S
    assert len(plan(s)) == 10  # the smoke preset: one seed, one sweep weight, 4 baselines


def test_speeds_are_assumed_until_records_measure_them() -> None:
    assert speeds([]) == (STEP_S, EVAL_S, False)
    step_s, eval_s, real = speeds([record("grpo", 0, falling())])
    assert (step_s, eval_s, real) == (10.0, 0.3, True)
