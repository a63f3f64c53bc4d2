"""experiments.reproduce end to end in its smoke preset, on a tiny real transformers model with
the real SmolLM2 tokenizer: every arm trains through the public trainer, records land on disk,
the report and plots are written, and a second invocation skips the finished runs. It checks
the plumbing, not the science."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from experiments.reproduce import ARMS, BASE, main, run_path
from paec.modeling.loader import tiny_model

PAEC_ONLY = ("entropy/masked", "entropy/top_p", "paec/penalty", "paec/mask_mean")
EVERY_ARM = ("entropy", "reward/mean", "completion/length_mean", "time/step", "train/step")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory,
          smollm2_tokenizer: PreTrainedTokenizerBase) -> tuple[Path, list[str], float]:
    """One smoke run of all five arms; returns (out folder, argv, its seconds)."""
    model = tmp_path_factory.mktemp("tiny")
    tiny_model(smollm2_tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0).save_pretrained(model)
    smollm2_tokenizer.save_pretrained(model)
    out = tmp_path_factory.mktemp("smoke")
    argv = ["--smoke", "--model", str(model), "--out", str(out)]
    t0 = time.perf_counter()
    assert main(argv) == 0
    return out, argv, time.perf_counter() - t0


@pytest.mark.slow
def test_every_arm_records_its_steps_and_evaluations(smoke: tuple[Path, list[str], float]) -> None:
    out, _, _ = smoke
    for arm in ARMS:
        record = json.loads(run_path(out, arm, 0).read_text())
        assert record["arm"] == arm and record["status"] == "completed"
        assert len(record["steps"]) == 2
        for step in record["steps"]:
            assert "train/skipped" not in step  # the smoke reward has variance: updates ran
            assert all(name in step for name in EVERY_ARM)
            assert all((name in step) == arm.startswith("paec") for name in PAEC_ONLY)
        for key in ("heldout", "hard"):
            assert set(record["evals"][key]) >= {"eval/avg@2", "eval/pass@2", "eval/maj@2"}
        assert not (out / "ckpt" / f"{arm}-seed0").exists()  # checkpoints are not kept


@pytest.mark.slow
def test_the_arms_differ_as_designed(smoke: tuple[Path, list[str], float]) -> None:
    out, _, _ = smoke

    def record(arm: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(run_path(out, arm, 0).read_text())
        return data

    configs = {arm: record(arm)["config"] for arm in ARMS}
    assert configs["grpo_entropy"]["loss"]["entropy_coef"] > 0  # type: ignore[index]
    assert configs["paec_no_penalty"]["paec"]["penalty_weight"] == 0  # type: ignore[index]
    assert configs["paec_strong"]["paec"]["penalty_weight"] == 10  # type: ignore[index]
    # Without the mask every weight is exactly 1 (quantile 0, hard mask).
    steps = record("paec_no_mask")["steps"]
    assert all(s["paec/mask_mean"] == 1.0 for s in steps)  # type: ignore[attr-defined]
    # The smoke preset freezes the anchor after one step, so the floor is live at step 2.
    assert "paec/floor" in record("paec")["steps"][1]  # type: ignore[index]


@pytest.mark.slow
def test_report_and_plots_are_written_to_out(smoke: tuple[Path, list[str], float]) -> None:
    out, _, _ = smoke
    report = (out / "results.md").read_text()
    for arm in ARMS:
        assert any(line.startswith(f"| {arm} |") for line in report.splitlines()), arm
    base = json.loads(run_path(out, BASE, 0).read_text())  # the untrained reference
    assert set(base["evals"]["heldout"]) >= {"eval/avg@2", "eval/pass@2", "eval/maj@2"}
    assert any(line.startswith("| untrained (step 0) | 0 |") for line in report.splitlines())
    assert "Reference: the untrained policy's maj@2" in report
    assert "## Claims checked" in report and "**Verdict (paec, penalty weight 1):**" in report
    assert "**Verdict (paec_strong, penalty weight 10):**" in report
    pngs = sorted((out / "results").glob("*.png"))
    assert {p.stem for p in pngs} == {"entropy", "entropy_top_p", "entropy_masked", "penalty",
                                      "reward", "length"}
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 1000 for p in pngs)
    data = json.loads((out / "results" / "records.json").read_text())  # the report's data
    assert sorted(r["arm"] for r in data["runs"]) == sorted(ARMS)
    assert data["untrained"]["arm"] == BASE


@pytest.mark.slow
def test_a_second_invocation_skips_finished_runs(smoke: tuple[Path, list[str], float],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out, argv, first = smoke
    before = {arm: run_path(out, arm, 0).stat().st_mtime_ns for arm in ARMS}
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(argv) == 0
    again = time.perf_counter() - t0
    assert capsys.readouterr().out.count("done already, skipped") == len(ARMS) + 1  # + base
    assert {arm: run_path(out, arm, 0).stat().st_mtime_ns for arm in ARMS} == before
    assert again < first
