"""experiments.stats on hand-made run records: the numbers the report is made of."""

from __future__ import annotations

import math
from typing import Any

from experiments.stats import (
    below_share,
    final,
    final_margin,
    first_below,
    first_divergence,
    fmt,
    group,
    kept_share,
    twin_of,
)
from tests.experiments.synthetic import FLOOR, record


def entropy_record(seed: int, entropy: list[float | None], reward: float = 0.5
                   ) -> dict[str, Any]:
    return {"arm": "paec", "seed": seed,
            "steps": [{"reward/mean": reward} | ({} if h is None else {"entropy": h})
                      for h in entropy]}


def test_entropies_equal_to_float_rounding_do_not_split_the_runs() -> None:
    a, b = entropy_record(0, [2.5, 2.4]), entropy_record(0, [2.5, 2.4])
    b["steps"][0]["entropy"] += 1e-8  # feature pass vs entropy pass: ~1e-7 relative
    assert first_divergence(a, b) is None
    b["steps"][1]["reward/mean"] = 0.75
    assert first_divergence(a, b) == 2


def test_a_metric_logged_by_one_run_only_splits_the_runs_there() -> None:
    assert first_divergence(entropy_record(0, [2.5, 2.4]), entropy_record(0, [2.5, None])) == 2


def test_final_is_the_mean_of_the_last_three_logged_values() -> None:
    r = entropy_record(0, [9.0, 1.0, None, 2.0, math.nan, 3.0])
    assert final(r, "entropy") == 2.0
    assert final(r, "paec/floor") is None


def test_margins_count_only_steps_after_the_anchor_froze() -> None:
    r = record("paec", 0, [1.0, 1.0, FLOOR + 0.1, FLOOR - 0.04, FLOOR - 0.3, FLOOR - 0.2])
    assert kept_share(r, 0.05) == 0.5  # steps 1-2 (the anchor's) are not counted
    assert below_share(r) == 0.75
    assert final_margin(r) is not None and math.isclose(final_margin(r) or 0, -0.18)
    assert first_below(r, 0.2) == 5


def test_a_value_over_seeds_is_mean_and_sample_sd_or_bare_for_one_seed() -> None:
    assert fmt([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert fmt([0.25, None]) == "0.250"
    assert fmt([None]) == "—"


def test_arms_are_grouped_in_report_order_the_sweep_by_weight() -> None:
    records = [record(a, 0, [2.0]) for a in ("paec_w10", "base", "paec", "paec_w0.3", "grpo")]
    assert list(group(records)) == ["grpo", "paec", "paec_w0.3", "paec_w10"]


def test_the_twin_of_a_run_is_the_run_with_its_seed() -> None:
    runs = [entropy_record(0, [1.0]), entropy_record(1, [2.0])]
    assert twin_of(entropy_record(1, [3.0]), runs) is runs[1]
    assert twin_of(entropy_record(2, [3.0]), runs) is None
