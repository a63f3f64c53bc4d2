"""experiments.reproduce end to end in its smoke preset, on a tiny real transformers model with
the real SmolLM2 tokenizer: a first sitting stops after two runs and its report names the
rest; a second one skips them and finishes; every run leaves its own record; a third runs
nothing. It checks the plumbing, not the science."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from experiments.arms import BASE, PAEC, plan
from experiments.budget import eval_sets
from experiments.records import record_path
from experiments.reproduce import main
from tests.experiments.synthetic import smoke_settings

PAEC_METRICS = ("entropy/masked", "entropy/top_p", "paec/penalty", "paec/mask_mean",
                "paec/decision_frac")
EVERY_STEP = ("entropy", "reward/mean", "completion/length_mean", "time/step", "train/step")


@dataclass(frozen=True)
class Smoke:
    out: Path
    argv: list[str]
    first: str
    """What the first sitting (--max-runs 2) printed."""
    partial: str
    """The report after the first sitting."""
    second: str
    seconds: float
    """How long the second sitting took."""


def run(argv: list[str]) -> tuple[str, float]:
    buffer = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue(), time.perf_counter() - t0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Smoke:
    out = tmp_path_factory.mktemp("smoke")
    argv = ["--smoke", "--model", str(tiny_dir), "--out", str(out)]
    first, _ = run([*argv, "--max-runs", "2"])
    partial = (out / "results.md").read_text()
    second, seconds = run(argv)
    return Smoke(out, argv, first, partial, second, seconds)


@pytest.mark.slow
def test_a_sitting_stops_after_max_runs_and_its_report_names_the_rest(smoke: Smoke) -> None:
    assert "stopping after 2 new run(s) (--max-runs)" in smoke.first
    assert "**Status: 2 of 10 planned runs finished.**" in smoke.partial
    assert ("Missing, in the order they will run: `base-seed0`, `paec_no_mask-seed0`, "
            "`grpo_entropy-seed0`, `paec_w3-seed0`, `ce_gppo-seed0`, `erc-seed0`, "
            "`entropic-seed0`, `aent-seed0`") in smoke.partial


@pytest.mark.slow
def test_the_next_sitting_skips_the_finished_runs_and_finishes(smoke: Smoke) -> None:
    skipped = [line for line in smoke.second.splitlines() if "done already, skipped" in line]
    assert skipped == ["[grpo-seed0] done already, skipped", "[paec-seed0] done already, skipped"]
    assert "**Status: 10 of 10 planned runs finished.**" in (smoke.out / "results.md").read_text()


@pytest.mark.slow
def test_every_run_leaves_its_own_record(smoke: Smoke) -> None:
    s = smoke_settings(smoke.out)
    for r in plan(s):
        record = json.loads(record_path(s.records, r).read_text())
        assert (record["arm"], record["seed"]) == (r.arm, r.seed)
        assert set(record["evals"]) == set(eval_sets(r))
        assert all(set(e) >= {"eval/avg@2", "eval/pass@2", "eval/maj@2"}
                   for e in record["evals"].values())
        assert len(record["mechanism"]["completions"]) == 8
        assert not (smoke.out / "ckpt" / r.name).exists()  # checkpoints are not kept
        if r.arm == BASE:
            assert record["status"] == "untrained" and "steps" not in record
            continue
        assert record["status"] == "completed" and len(record["steps"]) == 3
        for step in record["steps"]:
            assert "train/skipped" not in step  # the smoke reward has variance: updates ran
            assert all(name in step for name in EVERY_STEP + PAEC_METRICS)
        weight = 1.0 if r.arm == PAEC else 3.0 if r.arm == "paec_w3" else None
        if weight is not None:
            assert record["config"]["paec"]["penalty_weight"] == weight
        # The smoke preset freezes the anchor after one step, so the floor is live at step 2.
        assert "paec/floor" in record["steps"][1]


@pytest.mark.slow
def test_the_report_and_its_figures_are_written_to_out(smoke: Smoke) -> None:
    report = (smoke.out / "results.md").read_text()
    for arm in ("grpo", "paec", "paec_no_mask", "grpo_entropy", "paec_w3"):
        assert any(line.startswith(f"| {arm} |") for line in report.splitlines()), arm
    assert "**Verdict (`paec`, penalty weight 1):**" in report
    assert "| untrained (step 0) | 0 |" in report
    pngs = sorted((smoke.out / "results").glob("*.png"))
    assert {"mechanism.png", "entropy_masked.png", "one_token_share.png",
            "sweep_masked.png"} <= {p.name for p in pngs}
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 1000 for p in pngs)


@pytest.mark.slow
def test_a_finished_experiment_runs_nothing_again(smoke: Smoke) -> None:
    s = smoke_settings(smoke.out)
    before = {r: record_path(s.records, r).stat().st_mtime_ns for r in plan(s)}
    again, seconds = run(smoke.argv)
    assert again.count("done already, skipped") == len(before)
    assert {r: record_path(s.records, r).stat().st_mtime_ns for r in plan(s)} == before
    assert seconds < smoke.seconds


@pytest.mark.slow
def test_records_of_other_settings_stop_the_experiment(smoke: Smoke) -> None:
    with pytest.raises(SystemExit, match=r"grpo-seed0.json was made with other settings "
                                         r"\(learning_rate: 0.001 -> 0.002"):
        run([*smoke.argv, "--lr", "2e-3", "--plan"])
