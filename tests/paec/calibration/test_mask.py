"""paec.calibration.mask: score, batch quantile, soft and hard masks."""

from __future__ import annotations

import math

import pytest
import torch

from paec.calibration.features import TokenFeatures, token_features
from paec.calibration.mask import (
    competition,
    normalized_top_p_entropy,
    position_mask,
    position_score,
)
from paec.config.calibration import EntropyNormalization, MaskMode, PAECConfig


def features_of(hp: list[float], n: list[int], gap: list[float]) -> TokenFeatures:
    return TokenFeatures(torch.zeros(len(hp)), torch.tensor(hp), torch.tensor(n),
                         torch.tensor(gap), torch.zeros(len(hp)))


def test_score_by_hand() -> None:
    f = features_of(hp=[math.log(2), 0.0, 0.5], n=[2, 1, 4], gap=[0.0, 3.0, math.log(2)])
    scores, comp = position_score(f, PAECConfig(score_weight=0.25, competition_temperature=0.5))
    # Hhat = [log2/log2, 0 (one token), 0.5/log4]; c = exp(-gap/0.5) = [1, e^-6, 1/4]
    hhat = torch.tensor([1.0, 0.0, 0.5 / math.log(4)])
    c = torch.tensor([1.0, math.exp(-6.0), 0.25])
    torch.testing.assert_close(comp, c)
    torch.testing.assert_close(scores, 0.25 * hhat + 0.75 * c)


def test_unnormalised_score_uses_nats() -> None:
    hp = torch.tensor([0.7, 0.0])
    out = normalized_top_p_entropy(hp, torch.tensor([3, 1]), EntropyNormalization.NONE)
    assert torch.equal(out, hp)


def test_competition_is_one_for_a_tie_and_falls_with_the_gap() -> None:
    c = competition(torch.tensor([0.0, 1.0, math.inf]), 1.0)
    torch.testing.assert_close(c, torch.tensor([1.0, math.exp(-1.0), 0.0]))


def test_threshold_excludes_padding() -> None:
    # Padding positions have huge scores; they must not move the threshold or get weight.
    f = features_of(hp=[0.1, 0.2, 0.3, 0.4, 5.0, 5.0], n=[2] * 6, gap=[9.0] * 6)
    valid = torch.tensor([True, True, True, True, False, False])
    cfg = PAECConfig(score_weight=1.0, normalization="none", quantile=0.5, mask_mode="hard")
    m = position_mask(f, cfg, valid)
    assert float(m.threshold) == pytest.approx(0.3)  # "higher" median of 0.1..0.4
    assert m.weights.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(("rho", "selected"), [(0.0, 10), (0.8, 2), (1.0, 1)])
def test_hard_mask_keeps_the_top_share(rho: float, selected: int) -> None:
    f = features_of(hp=[float(i) for i in range(10)], n=[3] * 10, gap=[1.0] * 10)
    cfg = PAECConfig(score_weight=1.0, normalization="none", quantile=rho, mask_mode="hard")
    assert int(position_mask(f, cfg).weights.sum()) == selected


def test_soft_mask_is_half_at_the_threshold_and_carries_no_gradient() -> None:
    logits = torch.randn(40, 300, generator=torch.Generator().manual_seed(0)) * 3
    logits.requires_grad_()
    f = token_features(logits, 0.9)
    m = position_mask(f, PAECConfig(mask_temperature=0.05))
    assert not m.weights.requires_grad and not m.scores.requires_grad
    at = (m.scores == m.threshold).nonzero()
    assert len(at) >= 1
    torch.testing.assert_close(m.weights[at], torch.full_like(m.weights[at], 0.5))
    assert ((m.weights > 0.5) == (m.scores > m.threshold)).all()


def test_mask_modes_agree_on_which_side() -> None:
    f = token_features(torch.randn(64, 100, generator=torch.Generator().manual_seed(2)), 0.9)
    soft = position_mask(f, PAECConfig(mask_mode=MaskMode.SOFT))
    hard = position_mask(f, PAECConfig(mask_mode=MaskMode.HARD))
    assert torch.equal(soft.threshold, hard.threshold)
    assert torch.equal(hard.weights.bool(), soft.weights >= 0.5)


def test_batch_mask_is_the_same_however_the_features_were_chunked() -> None:
    logits = torch.randn(50, 257, generator=torch.Generator().manual_seed(1)) * 2
    whole = token_features(logits, 0.9, chunk_size=50)
    parts = TokenFeatures.cat([token_features(logits[i:i + 13], 0.9, chunk_size=4)
                               for i in range(0, 50, 13)])
    cfg = PAECConfig()
    assert torch.equal(position_mask(whole, cfg).weights, position_mask(parts, cfg).weights)


def test_all_padding_selects_nothing() -> None:
    f = features_of(hp=[0.1, 0.2], n=[2, 2], gap=[0.0, 0.0])
    m = position_mask(f, PAECConfig(), torch.zeros(2, dtype=torch.bool))
    assert m.weights.tolist() == [0.0, 0.0] and float(m.total) == 0.0
