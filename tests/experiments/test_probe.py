"""experiments.probe on the tiny model: it prints H_bar against the floor at every step and
the budget at the measured speed, keeps its record and checkpoint, and the experiment run
with the same settings takes it as its first run and only evaluates it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import probe, reproduce
from experiments.arms import Run
from experiments.records import probe_path, record_path
from tests.experiments.synthetic import smoke_settings


@pytest.mark.slow
def test_a_probe_reports_the_margin_and_is_reused_as_the_first_run(
        tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--smoke", "--model", str(tiny_dir), "--out", str(tmp_path)]
    assert probe.main(argv) == 0
    out = capsys.readouterr().out
    assert "[grpo-seed0] step   2/3  H_bar" in out and "margin +" in out
    assert "Regime NOT reached" in out  # a random tiny model does not collapse in 3 steps
    assert "The full experiment at these speeds (10 runs):" in out
    s = smoke_settings(tmp_path, model=str(tiny_dir))
    kept = json.loads(probe_path(s, Run("grpo", 0)).read_text())
    assert Path(kept["checkpoint"]).is_dir() and len(kept["steps"]) == 3

    assert reproduce.main([*argv, "--lr", "2e-3", "--plan"]) == 0  # other settings: not it
    assert "grpo-seed0             to run" in capsys.readouterr().out
    assert reproduce.main([*argv, "--max-runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "[grpo-seed0] trained by the probe" in out and "step   1/3" not in out
    record = json.loads(record_path(s.records, Run("grpo", 0)).read_text())
    assert record["steps"] == kept["steps"] and set(record["evals"]) == {"heldout", "hard"}
    assert record["from_probe"] == probe_path(s, Run("grpo", 0)).name
    assert not Path(kept["config"]["output_dir"]).exists()  # evaluated, then deleted
