"""experiments.report.write_report on synthetic records: the report says plainly which runs
are missing, keeps the first experiment's row, and writes its figures."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.arms import Run, plan
from experiments.plots import PLOTS
from experiments.report import MECHANISM_PNG, write_report
from tests.experiments.synthetic import falling, held, mechanism, record, smoke_settings


def finished(seeds: tuple[int, ...]) -> dict[Run, dict[str, object]]:
    out: dict[Run, dict[str, object]] = {}
    for s in seeds:
        out[Run("grpo", s)] = record("grpo", s, falling(seed=s), maj=0.5, hard=0.1) | {
            "mechanism": mechanism(seed=s)}
        out[Run("paec", s)] = record("paec", s, held(seed=s), maj=0.55, hard=0.12) | {
            "mechanism": mechanism(seed=s + 1)}
    return out


def first_experiment(path: Path) -> None:
    """A records.json of the first experiment's form: GRPO's masked entropy in
    `paec_no_penalty`, an uninstrumented `grpo`."""
    runs = [record("paec_no_penalty", 0, falling(end=2.05)) | {"eval_sizes": {"heldout": 21}},
            record("paec", 0, falling(end=2.05)) | {"eval_sizes": {"heldout": 21}},
            {"arm": "grpo", "seed": 0, "steps": [{"entropy": 2.0}], "config": {}}]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"runs": runs, "untrained": None}))


def test_a_partial_report_names_the_missing_runs_in_order(tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, seeds=(0, 1, 2), sweep=(3.0,))
    s.records.mkdir(parents=True)
    (s.records / "paec_strong-seed0.json").write_text("{}")
    write_report(s, plan(s), finished((0, 1)))
    text = s.report.read_text()
    assert "**Status: 4 of 14 planned runs finished.**" in text
    assert ("Missing, in the order they will run: `grpo-seed2`, `paec-seed2`, `base-seed0`, "
            "`paec_no_mask-seed0`, `grpo_entropy-seed0`, `paec_w3-seed0`, `ce_gppo-seed0`, "
            "`erc-seed0`, `entropic-seed0`, `aent-seed0`") in text
    assert "ignored: `paec_strong-seed0.json`" in text
    assert "the floor claim is not decided yet: seed(s) 2 have not run" in text
    assert "Not checked yet: fewer than two penalty weights have run." in text


def test_the_report_keeps_the_first_experiments_row(tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, seeds=(0, 1, 2))
    first_experiment(s.first_experiment)
    write_report(s, plan(s), finished((0, 1, 2)))
    rows = [line for line in s.report.read_text().splitlines()
            if line.startswith("| first (issue 7)") or line.startswith("| this one")]
    assert len(rows) == 2
    assert rows[0].endswith("| not shown: the regime was not reached |")
    assert "| 21 |" in rows[0] and rows[1].endswith("| shown |")


def test_sections_come_in_order_with_their_figures(tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, seeds=(0,))
    records = finished((0,)) | {Run("base", 0): record("base", 0, [2.0]) | {"steps": []}}
    write_report(s, plan(s), records)
    text = s.report.read_text()
    sections = ["## Setup", "## Why the design changed", "## Claims checked", "## Mechanism",
                "## Final evaluation", "## Entropy", "## Training", "## Curves"]
    assert [text.index(x) for x in sections] == sorted(text.index(x) for x in sections)
    assert "| untrained (step 0) | 0 |" in text
    pngs = {p.name for p in s.plots.glob("*.png")}
    assert pngs == {f"{stem}.png" for stem, _, _ in PLOTS} | {MECHANISM_PNG}


def test_a_report_before_any_run_says_so(tmp_path: Path) -> None:
    s = smoke_settings(tmp_path)
    write_report(s, plan(s), {})
    text = s.report.read_text()
    assert "**Status: 0 of 10 planned runs finished.**" in text
    assert text.rstrip().endswith("No training run has finished yet.")
