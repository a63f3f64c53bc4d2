"""experiments.report.write_report on synthetic run records: the markdown in its section
order, one PNG per curve, and the records it was made from beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.plots import PLOTS
from experiments.report import RECORDS, write_report

CONFIG = {"model": "tiny", "train_data": "builtin:add", "prompts_per_step": 2, "group_size": 2,
          "steps": 4, "max_new_tokens": 8, "learning_rate": 1e-5, "eval_k": 2,
          "loss": {"clip_high": 0.28, "kl_coef": 0.0}, "paec": {"penalty_weight": 1.0}}


def run(arm: str, seed: int, maj: float) -> dict[str, Any]:
    steps = [{"reward/mean": 0.5, "entropy": 2.0 - 0.1 * i} for i in range(4)]
    if arm == "paec":
        for i, s in enumerate(steps[2:], start=2):
            s |= {"entropy/masked": 1.5 - 0.1 * i, "paec/floor": 1.4, "paec/penalty": 0.0}
    return {"arm": arm, "seed": seed, "config": CONFIG, "steps": steps, "wall_time_s": 60.0,
            "evals": {"heldout": {"eval/avg@2": maj, "eval/pass@2": maj, "eval/maj@2": maj}},
            "eval_sizes": {"heldout": 10, "hard": 5}}


def test_the_report_names_every_section_in_order_and_keeps_its_records(tmp_path: Path) -> None:
    records = [run("paec", 1, 0.6), run("grpo", 0, 0.5), run("paec", 0, 0.7)]
    write_report(records, tmp_path / "results.md", tmp_path / "results")
    text = (tmp_path / "results.md").read_text()
    sections = ["## Setup", "## Claims checked", "## Final evaluation", "## Entropy",
                "## Training", "## Curves"]
    assert [text.index(s) for s in sections] == sorted(text.index(s) for s in sections)
    assert "- Runs: `grpo` seeds 0; `paec` seeds 0,1. Total wall time 3.0 min." in text
    assert "| paec | 0,1 | 0.650 ± 0.071 |" in text
    assert {p.stem for p in (tmp_path / "results").glob("*.png")} == {s for s, _, _ in PLOTS}
    data = json.loads((tmp_path / "results" / RECORDS).read_text())
    assert [(r["arm"], r["seed"]) for r in data["runs"]] == [("grpo", 0), ("paec", 0),
                                                            ("paec", 1)]
    assert data["untrained"] is None
