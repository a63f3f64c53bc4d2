"""The position mask where trained RLVR policies live: 50% to 95% of the positions with a
one-token nucleus, on synthetic logits and on the real SmolLM2's sharpened to a low
temperature. The table of `bench/mask_regimes.py`, checked:

  - positions with a one-token nucleus take at most 10% of sum(m) (the default scope: none);
  - H_bar stays between 0.9 and 1.6 times the decision positions' mean H^p (it weights the
    higher-scoring decisions, so it sits at or above their mean);
  - `paec/mask_mean` follows docs/metrics.md: (1 - rho) * decision_frac exactly for the hard
    mask (up to the quantile's rounding), between 0.9 and 1.5 times that for the soft one;
  - the old scope (`all`) shows the dilution it was replaced for.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch

from paec.calibration.features import token_features
from paec.calibration.mask import position_mask
from paec.config.calibration import MaskMode, MaskScope, PAECConfig
from tests.service import load_script

BENCH = Path(__file__).resolve().parents[3] / "bench" / "mask_regimes.py"


def bench() -> ModuleType:
    return load_script(BENCH, "mask_regimes")


def check_rows(rows: list, cfg: PAECConfig) -> None:
    assert [r.scope for r in rows[:2]] == ["decision", "all"]
    decision = [r for r in rows if r.scope == "decision"]
    assert len(decision) == len(rows) // 2 == 4
    for r in decision:
        assert r.one_token_share <= 0.10, r
        assert 0.9 <= r.hbar_ratio <= 1.6, r
        assert 0.9 * r.formula <= r.mask_mean <= 1.5 * r.formula, r
        assert r.formula == pytest.approx((1 - cfg.quantile) * (1 - r.share), rel=1e-6)


def test_synthetic_regimes_keep_the_mask_on_the_decisions() -> None:
    cfg = PAECConfig()
    rows = bench().synthetic_rows(cfg)
    assert [round(r.share, 2) for r in rows[::2]] == [0.5, 0.8, 0.9, 0.95]
    check_rows(rows, cfg)
    # The form it replaced: past rho of one-token positions they fill the mask.
    old = {round(r.share, 2): r for r in rows if r.scope == "all"}
    assert old[0.9].one_token_share > 0.5 and old[0.95].hbar_ratio < 0.5


@pytest.mark.slow
def test_sharpened_smollm2_regimes_keep_the_mask_on_the_decisions(smollm2_dir: Path) -> None:
    cfg = PAECConfig()
    module = bench()
    logits = module.smollm2_logits(n_problems=8, model_source=str(smollm2_dir))
    rows, temps = module.smollm2_rows(cfg, logits)
    assert temps == sorted(temps, reverse=True) and temps[-1] < 1.0  # sharpened
    for r, share in zip(rows[::2], module.SHARES, strict=True):
        assert r.share == pytest.approx(share, abs=0.02)
    check_rows(rows, cfg)


@pytest.mark.parametrize("share", [0.5, 0.8, 0.9, 0.95])
def test_the_hard_mask_selects_the_top_1_minus_rho_of_the_decisions(share: float) -> None:
    cfg = PAECConfig(mask_mode=MaskMode.HARD)
    feats = token_features(bench().synthetic_logits(share, seed=3), cfg.top_p)
    mask = position_mask(feats, cfg)
    n_dec = int((feats.nucleus_size > 1).sum())
    # q is the ceil(rho (n_dec - 1)) + 1-th smallest score: n_dec minus that many + 1 are >= q
    expected = n_dec - math.ceil(cfg.quantile * (n_dec - 1))
    assert int(mask.total) == expected
    assert abs(float(mask.total) - (1 - cfg.quantile) * n_dec) <= 1
    assert bool((mask.weights[feats.nucleus_size == 1] == 0).all())


def test_no_position_that_can_decide_leaves_h_bar_undefined_and_the_term_idle() -> None:
    from paec.calibration.anchor import AnchorState
    from paec.calibration.penalty import PAECBatch

    logits = torch.full((6, 50), -20.0)
    logits[:, 3] = 10.0  # every row: one token with all the mass
    feats = token_features(logits, 0.9)
    anchor = AnchorState(1, 0.8, steps_seen=1, total=1.0, anchor=1.0)
    batch = PAECBatch.build(feats, anchor, PAECConfig())
    assert batch.masked_entropy is None and batch.mask_total == 0.0
    assert batch.penalty == 0.0 and not batch.needs_gradient
    metrics = batch.metrics()
    assert "entropy/masked" not in metrics and metrics["paec/decision_frac"] == 0.0
    old = PAECBatch.build(feats, anchor, PAECConfig(mask_scope=MaskScope.ALL))
    assert old.masked_entropy == 0.0 and old.penalty > 0  # the old form: a hinge on nothing


def test_scope_all_is_the_previous_mask_over_every_valid_position() -> None:
    cfg = PAECConfig()
    feats = token_features(bench().synthetic_logits(0.8, seed=5), cfg.top_p)
    old = position_mask(feats, replace(cfg, mask_scope=MaskScope.ALL))
    assert bool(old.candidates.all())
    expected = torch.sigmoid((old.scores - old.threshold) / cfg.mask_temperature)
    torch.testing.assert_close(old.weights, expected)
