"""experiments.stats on hand-made run records: the numbers the report is made of."""

from __future__ import annotations

import math
from typing import Any

from experiments.stats import final, first_divergence, fmt, twin_of


def record(seed: int, entropy: list[float | None], reward: float = 0.5) -> dict[str, Any]:
    return {"arm": "paec", "seed": seed,
            "steps": [{"reward/mean": reward} | ({} if h is None else {"entropy": h})
                      for h in entropy]}


def test_entropies_equal_to_float_rounding_do_not_split_the_runs() -> None:
    a, b = record(0, [2.5, 2.4]), record(0, [2.5, 2.4])
    b["steps"][0]["entropy"] += 1e-8  # feature pass vs entropy pass: ~1e-7 relative
    assert first_divergence(a, b) is None
    b["steps"][1]["reward/mean"] = 0.75
    assert first_divergence(a, b) == 2


def test_a_metric_logged_by_one_run_only_splits_the_runs_there() -> None:
    assert first_divergence(record(0, [2.5, 2.4]), record(0, [2.5, None])) == 2


def test_final_is_the_mean_of_the_last_three_logged_values() -> None:
    r = record(0, [9.0, 1.0, None, 2.0, math.nan, 3.0])
    assert final(r, "entropy") == 2.0
    assert final(r, "paec/floor") is None


def test_a_value_over_seeds_is_mean_and_sample_sd_or_bare_for_one_seed() -> None:
    assert fmt([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert fmt([0.25, None]) == "0.250"
    assert fmt([None]) == "—"


def test_the_twin_of_a_run_is_the_run_with_its_seed() -> None:
    runs = [record(0, [1.0]), record(1, [2.0])]
    assert twin_of(record(1, [3.0]), runs) is runs[1]
    assert twin_of(record(2, [3.0]), runs) is None
