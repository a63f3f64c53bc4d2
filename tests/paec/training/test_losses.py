"""Tests of paec.training.losses: every loss against hand-computed numbers, micro-batch invariance,
the 80/20 mask (mirroring TRL's TestGetHighEntropyMask), the kthvalue quantile and the config."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor

from paec.calibration.kernels import quantile_threshold
from paec.training.entropy_losses import (
    BaselineInputs,
    ce_gppo_token_loss,
    entropic_token_loss,
    erc_token_loss,
)
from paec.training.losses import (
    LossAggregation,
    PolicyLossConfig,
    PolicyLossType,
    aggregate,
    cispo_token_loss,
    clip_cov_token_loss,
    grpo_token_loss,
    high_entropy_token_mask,
    kl_cov_token_loss,
    kl_k3,
    policy_loss,
    policy_token_loss,
)

F64 = torch.float64
PAD = 1000.0  # garbage log-prob at padding: exp(1001) overflows to inf if it leaks


def _from_ratios(ratios: list[list[float]], old: float = -1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(logp leaf with grad, old_logp, mask) with r = exp(logp - old); NaN marks padding."""
    r = torch.tensor(ratios, dtype=F64)  # (B, T)
    mask = ~r.isnan()  # (B, T)
    old_logp = torch.full_like(r, old)  # (B, T)
    logp = torch.where(mask, old + r.log(), PAD).requires_grad_()  # (B, T)
    return logp, old_logp, mask


# Shared GRPO/CISPO case: A = +2 on row 0, -1 on row 1; eps_low = 0.2, eps_high = 0.28.
GRPO_RATIOS = [[1.25, 1.5, 0.5, 1.0], [0.85, 1.5, 0.5, math.nan]]
GRPO_ADV = torch.tensor([2.0, -1.0], dtype=F64)


def test_grpo_hand_case() -> None:
    logp, old, mask = _from_ratios(GRPO_RATIOS)
    loss, m = grpo_token_loss(logp, old, GRPO_ADV, mask, clip_low=0.2, clip_high=0.28)
    # l = max(-A r, -A clip(r, 0.8, 1.28))
    # row 0 (A=+2): r=1.25 inside -> -2.5 (a symmetric 0.2 clip would give -2.4);
    #   r=1.5 above -> max(-3.0, -2.56) = -2.56 (clipped); r=0.5 below, A>0 -> max(-1.0, -1.6)
    #   = -1.0 (not clipped); r=1 -> -2.0
    # row 1 (A=-1): r=0.85 -> 0.85; r=1.5 -> max(1.5, 1.28) = 1.5 (not clipped);
    #   r=0.5 -> max(0.5, 0.8) = 0.8 (clipped); padding -> 0
    expected = torch.tensor([[-2.5, -2.56, -1.0, -2.0], [0.85, 1.5, 0.8, 0.0]], dtype=F64)
    torch.testing.assert_close(loss, expected)
    # d/dlogp (-A r) = -A r on unclipped tokens, 0 where the clipped branch is active
    loss.sum().backward()
    grad = torch.tensor([[-2.5, 0.0, -1.0, -2.0], [0.85, 1.5, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(logp.grad, grad)
    assert m["policy/clip_frac_high"].item() == pytest.approx(1 / 7)
    assert m["policy/clip_frac_low"].item() == pytest.approx(1 / 7)
    assert m["policy/ratio_mean"].item() == pytest.approx(7.1 / 7)


def test_grpo_clip_higher_is_asymmetric() -> None:
    logp, old, mask = _from_ratios([[1.25, 0.75]])
    adv = torch.tensor([1.0], dtype=F64)
    sym, _ = grpo_token_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    higher, _ = grpo_token_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # r=1.25, A=1: symmetric clips to -1.2, clip-higher keeps -1.25; r=0.75 < 0.8 with A > 0
    # is never clipped: -0.75 in both.
    torch.testing.assert_close(sym, torch.tensor([[-1.2, -0.75]], dtype=F64))
    torch.testing.assert_close(higher, torch.tensor([[-1.25, -0.75]], dtype=F64))


def test_cispo_hand_case() -> None:
    logp, old, mask = _from_ratios(GRPO_RATIOS)
    loss, m = cispo_token_loss(logp, old, GRPO_ADV, mask, clip_high=0.28)
    # l = -min(r, 1.28) A logp with logp = -1 + ln r; weights: row 0 [1.25, 1.28, 0.5, 1.0],
    # row 1 [0.85, 1.28, 0.5]
    lp = [[-1 + math.log(1.25), -1 + math.log(1.5), -1 + math.log(0.5), -1.0],
          [-1 + math.log(0.85), -1 + math.log(1.5), -1 + math.log(0.5)]]
    expected = torch.tensor([
        [-1.25 * 2 * lp[0][0], -1.28 * 2 * lp[0][1], -0.5 * 2 * lp[0][2], -1.0 * 2 * lp[0][3]],
        [0.85 * lp[1][0], 1.28 * lp[1][1], 0.5 * lp[1][2], 0.0],
    ], dtype=F64)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    # the weight is detached: the gradient is -w A, and every token keeps one
    grad = torch.tensor([[-2.5, -2.56, -1.0, -2.0], [0.85, 1.28, 0.5, 0.0]], dtype=F64)
    torch.testing.assert_close(logp.grad, grad)
    assert m["policy/clip_frac_high"].item() == pytest.approx(2 / 7)  # both r = 1.5
    assert m["policy/clip_frac_low"].item() == 0.0


# Shared Clip-Cov/KL-Cov case. A = +2 (row 0), -2 (row 1): mean A = 0. Valid logp:
# row 0 [0, -5, -0.5], row 1 [-2.1, -2.2, -2.2]: mean logp = -12 / 6 = -2. So
# Cov = A (logp + 2): row 0 [4, -6, 3], row 1 [0.2, 0.4, 0.4]. Column 3 is padding.
COV_LOGP = [[0.0, -5.0, -0.5], [-2.1, -2.2, -2.2]]
COV_ADV = torch.tensor([2.0, -2.0], dtype=F64)


def _cov_case(ratios: list[list[float]]) -> tuple[Tensor, Tensor, Tensor]:
    lp = torch.tensor(COV_LOGP, dtype=F64)  # (2, 3)
    old = lp - torch.tensor(ratios, dtype=F64).log()  # (2, 3)
    logp = torch.cat([lp, torch.full((2, 1), PAD, dtype=F64)], 1).requires_grad_()  # (2, 4)
    old = torch.cat([old, torch.full((2, 1), -3.0, dtype=F64)], 1)  # (2, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])  # (2, 4)
    return logp, old, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_hand_case_forced_choice(seed: int) -> None:
    # r: row 0 [1.0, 1.1, 1.5], row 1 [0.9, 1.0, 1.2]. In (1, 5): Cov 4 at (0,0) and Cov 3 at
    # (0,2), but (0,2) has r = 1.5 > 1.28 with A > 0, already PPO-clipped. So (0,0) is the only
    # candidate, and k = max(1, int(2e-4 * 6)) = 1 forces it whatever the generator.
    logp, old, mask = _cov_case([[1.0, 1.1, 1.5], [0.9, 1.0, 1.2]])
    gen = torch.Generator().manual_seed(seed)
    loss, m = clip_cov_token_loss(logp, old, COV_ADV, mask, clip_low=0.2, clip_high=0.28,
                                  cov_ratio=2e-4, cov_lb=1.0, cov_ub=5.0, generator=gen)
    # GRPO: row 0 [-2.0, -2.2, max(-3.0, -2.56)], row 1 (-A r = 2r) [1.8, 2.0, 2.4];
    # Clip-Cov zeroes (0,0)
    expected = torch.tensor([[0.0, -2.2, -2.56, 0.0], [1.8, 2.0, 2.4, 0.0]], dtype=F64)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    grad = torch.tensor([[0.0, -2.2, 0.0, 0.0], [1.8, 2.0, 2.4, 0.0]], dtype=F64)
    torch.testing.assert_close(logp.grad, grad)
    assert m["policy/cov_selected"].item() == 1.0
    assert m["policy/cov_selected_frac"].item() == pytest.approx(1 / 6)


def test_clip_cov_random_selection_is_a_subset_and_reproducible() -> None:
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(6, 50, generator=g, dtype=F64) * 3  # (6, 50)
    logp = old + 0.2 * torch.randn(6, 50, generator=g, dtype=F64)  # (6, 50)
    adv = torch.randn(6, generator=g, dtype=F64)  # (6,)
    mask = torch.arange(50) < torch.tensor([50, 40, 30, 20, 10, 0]).unsqueeze(1)  # (6, 50)
    base, _ = grpo_token_loss(logp, old, adv, mask)

    def run(seed: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(seed)
        loss, m = clip_cov_token_loss(logp, old, adv, mask, cov_ratio=0.1, cov_lb=-1e9,
                                      cov_ub=1e9, generator=gen)
        return loss, m["policy/cov_selected"]

    loss_a, n_a = run(7)
    loss_b, _ = run(7)
    loss_c, _ = run(8)
    torch.testing.assert_close(loss_a, loss_b)
    assert not torch.equal(loss_a, loss_c)
    chosen = (loss_a != base) | ((base != 0) & (loss_a == 0))
    r = (logp - old).exp()
    a = adv.unsqueeze(1).expand_as(r)
    clipped = ((r > 1.28) & (a > 0)) | ((r < 0.8) & (a < 0))
    assert not (chosen & (~mask | clipped)).any()  # only valid, unclipped tokens are chosen
    assert int(n_a) == int(0.1 * 150) == int(chosen.sum())  # 150 valid tokens
    torch.testing.assert_close(loss_a[~chosen], base[~chosen])


def test_kl_cov_hand_case() -> None:
    # r: row 0 [1.2, 1.1, 1.5], row 1 [0.9, 1.0, 1.2]. k = max(1, int(2e-4 * 6)) = 1: the top
    # Cov token is (0,0) (Cov 4): l = -2 * 1.2 + |ln 1.2|. Elsewhere the unclipped -A r.
    logp, old, mask = _cov_case([[1.2, 1.1, 1.5], [0.9, 1.0, 1.2]])
    loss, m = kl_cov_token_loss(logp, old, COV_ADV, mask, cov_ratio=2e-4, coef=1.0)
    expected = torch.tensor([[-2.4 + math.log(1.2), -2.2, -3.0, 0.0], [1.8, 2.0, 2.4, 0.0]],
                            dtype=F64)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    # d/dlogp: -A r + coef * sign(logp - old) = -2.4 + 1 at (0,0); -A r elsewhere (no clip)
    grad = torch.tensor([[-1.4, -2.2, -3.0, 0.0], [1.8, 2.0, 2.4, 0.0]], dtype=F64)
    torch.testing.assert_close(logp.grad, grad)
    assert m["policy/cov_selected_frac"].item() == pytest.approx(1 / 6)
    assert m["policy/clip_frac_high"].item() == 0.0
    # k = int(0.34 * 6) = 2: the two largest Cov, (0,0) = 4 and (0,2) = 3
    loss2, _ = kl_cov_token_loss(logp, old, COV_ADV, mask, cov_ratio=0.34, coef=1.0)
    assert loss2[0, 2].item() == pytest.approx(-3.0 + math.log(1.5))
    assert loss2[0, 0].item() == pytest.approx(-2.4 + math.log(1.2))


def test_kl_cov_on_policy_equals_minus_a_ratio() -> None:
    logp, old, mask = _cov_case([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    loss, _ = kl_cov_token_loss(logp, old, COV_ADV, mask, cov_ratio=0.5, coef=10.0)
    # |logp - old| = 0 everywhere: -A r = -A (PRIME-RL Entropy-Mechanism #1)
    expected = torch.tensor([[-2.0, -2.0, -2.0, 0.0], [2.0, 2.0, 2.0, 0.0]], dtype=F64)
    torch.testing.assert_close(loss, expected)


def test_kl_k3_hand_case() -> None:
    logp = torch.tensor([math.log(0.5), math.log(0.25), -1.3], dtype=F64, requires_grad=True)
    ref = torch.tensor([math.log(0.25), math.log(0.5), -1.3], dtype=F64)
    kl = kl_k3(logp, ref)
    # d = ref - logp = [-ln 2, ln 2, 0]; e^d - d - 1 = [0.5 + ln 2 - 1, 2 - ln 2 - 1, 0]
    torch.testing.assert_close(kl, torch.tensor([math.log(2) - 0.5, 1 - math.log(2), 0.0],
                                                dtype=F64))
    kl.sum().backward()
    # d/dlogp = 1 - e^d = [0.5, -1, 0]
    torch.testing.assert_close(logp.grad, torch.tensor([0.5, -1.0, 0.0], dtype=F64))


# Per-token losses [[1, 2, 3, pad], [4, pad, pad, pad], [all pad]]; padding holds NaN.
AGG_LOSS = torch.tensor([[1.0, 2.0, 3.0, math.nan], [4.0, math.nan, 100.0, 7.0],
                         [math.nan] * 4], dtype=F64)
AGG_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(("mode", "kwargs", "expected"), [
    ("token-mean", {}, 10 / 4),  # (1 + 2 + 3 + 4) / 4 valid tokens
    ("seq-mean-token-mean", {}, (2 + 4) / 2),  # seq means 2 and 4; the empty row is not counted
    ("seq-mean-token-sum-norm", {}, (6 / 4 + 4 / 4) / 2),  # sums / T = 4, over 2 sequences
    ("seq-mean-token-sum-norm", {"max_len": 8}, (6 / 8 + 4 / 8) / 2),
    ("token-mean", {"total_tokens": 8}, 10 / 8),
    ("seq-mean-token-mean", {"total_seqs": 4}, (2 + 4) / 4),
    ("seq-mean-token-sum-norm", {"total_seqs": 3}, (6 / 4 + 4 / 4) / 3),
])
def test_aggregate_hand_cases(mode: str, kwargs: dict[str, float], expected: float) -> None:
    value = aggregate(AGG_LOSS, AGG_MASK, mode, **kwargs)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(expected)


def test_aggregate_all_masked_is_zero_not_nan() -> None:
    for mode in LossAggregation:
        value = aggregate(AGG_LOSS[2:], AGG_MASK[2:], mode)
        assert value.item() == 0.0


def test_aggregate_rejects_non_positive_totals() -> None:
    with pytest.raises(ValueError, match="total_tokens"):
        aggregate(AGG_LOSS, AGG_MASK, LossAggregation.TOKEN_MEAN, total_tokens=0)
    with pytest.raises(ValueError, match="aggregation mode"):
        aggregate(AGG_LOSS, AGG_MASK, "sum")


def _random_batch(seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, t = 8, 6
    lengths = torch.tensor([6, 3, 1, 0, 5, 2, 6, 4])
    mask = torch.arange(t) < lengths.unsqueeze(1)  # (B, T)
    old = -torch.rand(b, t, generator=g, dtype=F64) * 3  # (B, T)
    return {
        "logp": (old + 0.3 * torch.randn(b, t, generator=g, dtype=F64)).requires_grad_(),
        "old_logp": old,
        "advantages": torch.randn(b, generator=g, dtype=F64),
        "mask": mask,
        "entropy": (torch.rand(b, t, generator=g, dtype=F64) * 2).requires_grad_(),
        "ref_logp": old + 0.1 * torch.randn(b, t, generator=g, dtype=F64),
    }


@pytest.mark.parametrize("mode", list(LossAggregation))
@pytest.mark.parametrize("loss_type", [PolicyLossType.GRPO, PolicyLossType.CISPO])
@pytest.mark.parametrize("n_micro", [1, 2, 4])
def test_micro_batch_invariance(mode: LossAggregation, loss_type: PolicyLossType,
                                n_micro: int) -> None:
    cfg = PolicyLossConfig(loss_type=loss_type, aggregation=mode, kl_coef=0.1, entropy_coef=0.01,
                           high_entropy_quantile=0.5)
    full = _random_batch()
    full_thr = quantile_threshold(full["entropy"].detach(), full["mask"], 0.5)
    full_loss, _ = policy_loss(full["logp"], full["old_logp"], full["advantages"], full["mask"],
                               cfg, entropy=full["entropy"], ref_logp=full["ref_logp"],
                               entropy_threshold=full_thr)
    full_loss.backward()

    micro = _random_batch()
    valid = micro["mask"]
    totals = {"total_tokens": float(valid.sum()), "total_seqs": float(valid.any(1).sum()),
              "max_len": valid.shape[1]}
    # the 80/20 threshold is global over the optimisation batch (TRL #3833)
    thr = quantile_threshold(micro["entropy"].detach(), valid, 0.5)
    acc = torch.zeros((), dtype=F64)
    for idx in torch.arange(8).chunk(n_micro):
        part = {k: v[idx] for k, v in micro.items()}
        loss, _ = policy_loss(part["logp"], part["old_logp"], part["advantages"], part["mask"],
                              cfg, entropy=part["entropy"], ref_logp=part["ref_logp"],
                              entropy_threshold=thr, **totals)  # type: ignore[arg-type]
        loss.backward()
        acc = acc + loss.detach()
    torch.testing.assert_close(acc, full_loss.detach())
    torch.testing.assert_close(micro["logp"].grad, full["logp"].grad)
    torch.testing.assert_close(micro["entropy"].grad, full["entropy"].grad)


# TRL tests/test_grpo_trainer.py::TestGetHighEntropyMask, the same six cases.
TRL_ENT = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]])
TRL_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize(("entropy", "mask", "q", "expected"), [
    # 10 valid tokens; q = 0.8 keeps the top 20%: 0.9 and 1.0 (1.1, 1.2 are padding)
    (TRL_ENT, TRL_MASK, 0.8, [[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]]),
    # valid {0.1, 0.2, 0.3, 1.4, 0.5, 0.6, 0.7, 0.8}: the top 20% are 1.4 and 0.8
    (torch.tensor([[0.1, 0.2, 0.3, 1.4, 0.5, 0.14], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]),
     torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]]), 0.8,
     [[0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]]),
    (TRL_ENT, TRL_MASK, 0.5, [[0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0]]),  # top half
    (TRL_ENT, TRL_MASK, 0.0, [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),  # all valid tokens
    (TRL_ENT, TRL_MASK, 1.0, [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]]),  # only the maximum
    (TRL_ENT, torch.zeros(2, 6), 0.5, [[0] * 6, [0] * 6]),  # fully masked: all False
])
def test_high_entropy_mask_trl_cases(entropy: Tensor, mask: Tensor, q: float,
                                     expected: list[list[int]]) -> None:
    out = high_entropy_token_mask(entropy, mask, q)
    assert torch.equal(out, torch.tensor(expected, dtype=torch.bool))


def test_high_entropy_mask_multiplies_policy_loss_with_unchanged_normaliser() -> None:
    logp, old, mask = _from_ratios([[1.0, 1.0, 1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0], dtype=F64)
    entropy = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.7]], dtype=F64)
    cfg = PolicyLossConfig(high_entropy_quantile=0.8)
    threshold = quantile_threshold(entropy, mask, 0.8)
    loss, m = policy_loss(logp, old, adv, mask, cfg, entropy=entropy, entropy_threshold=threshold)
    # q = 0.8 over 5 tokens: rank ceil(0.8 * 4) = 4 -> threshold 0.9, only token 3 is kept;
    # token-mean still divides by 5: (-1) / 5
    assert loss.item() == pytest.approx(-0.2)
    assert m["policy/high_entropy_frac"].item() == pytest.approx(0.2)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0, 0, 0, -0.2, 0]], dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_quantile_threshold_equals_torch_quantile_higher(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for n in [1, 2, 3, 7, 10, 100, 1001, 4097]:
        values = torch.randn(n, generator=g).to(dtype)  # (n,)
        valid = torch.rand(n, generator=g) < 0.7  # (n,)
        valid[0] = True
        for q in [0.0, 0.2, 0.5, 0.8, 1.0, *torch.rand(5, generator=g).tolist()]:
            ref = torch.quantile(values[valid], q, interpolation="higher")
            assert torch.equal(quantile_threshold(values, valid, q), ref), (n, q)


def test_quantile_threshold_above_2_pow_24() -> None:
    # torch.quantile raises "input tensor is too large" here (pytorch #64947).
    n = 2**24 + 3  # = 1000 * 16777 + 219: values 0..218 appear 16778 times, 219..999 16777
    values = (torch.arange(n) % 1000).to(torch.float32).flip(0)  # reverse order on purpose
    valid = torch.ones(n, dtype=torch.bool)
    # rank ceil(0.5 * (n - 1)) = 8388609; #(v <= 218) = 219 * 16778 = 3674382, then 16777 per
    # value: #(v <= 498) = 3674382 + 280 * 16777 = 8371942 <= 8388609 < #(v <= 499) = 8388719
    assert quantile_threshold(values, valid, 0.5).item() == 499.0


def test_quantile_threshold_errors() -> None:
    with pytest.raises(ValueError, match="no valid"):
        quantile_threshold(torch.ones(3), torch.zeros(3, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile_threshold(torch.ones(3), torch.ones(3, dtype=torch.bool), 1.5)


def _tiny_model_batch() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Parameters (logits) -> (params, logp, entropy with grad, old_logp, mask)."""
    g = torch.Generator().manual_seed(0)
    params = torch.randn(2, 3, 5, generator=g, dtype=F64, requires_grad=True)  # (B, T, V)
    tokens = torch.randint(0, 5, (2, 3), generator=g)  # (B, T)
    logprobs = params.log_softmax(-1)  # (B, T, V)
    logp = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    entropy = -(logprobs.exp() * logprobs).sum(-1)  # (B, T)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # (B, T)
    return params, logp, entropy, logp.detach(), mask


def test_entropy_bonus_flows_gradients() -> None:
    params, logp, entropy, old, mask = _tiny_model_batch()
    adv = torch.zeros(2, dtype=F64)  # no policy gradient: any gradient is the bonus's
    cfg = PolicyLossConfig(entropy_coef=0.1)
    loss, m = policy_loss(logp, old, adv, mask, cfg, entropy=entropy)
    loss.backward()
    assert params.grad is not None and params.grad.abs().sum() > 0
    # the bonus is -coef * token-mean entropy (TRL test_entropy_bonus_scale)
    mean_h = entropy.detach()[mask.bool()].mean()
    assert loss.item() == pytest.approx(-0.1 * mean_h.item())
    assert m["loss/entropy_bonus"].item() == pytest.approx(0.1 * mean_h.item())


def test_entropy_bonus_without_grad_raises() -> None:
    _, logp, entropy, old, mask = _tiny_model_batch()
    adv = torch.ones(2, dtype=F64)
    cfg = PolicyLossConfig(entropy_coef=0.1)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, mask, cfg, entropy=entropy.detach())
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, mask, cfg)


def test_missing_inputs_raise() -> None:
    _, logp, _, old, mask = _tiny_model_batch()
    adv = torch.ones(2, dtype=F64)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, mask, PolicyLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, mask, PolicyLossConfig(high_entropy_quantile=0.8))
    # No silent per-micro-batch quantile: the whole batch's threshold must be passed.
    with pytest.raises(ValueError, match="entropy_threshold"):
        policy_loss(logp, old, adv, mask, PolicyLossConfig(high_entropy_quantile=0.8),
                    entropy=torch.rand_like(logp))
    with pytest.raises(ValueError, match="advantages"):
        grpo_token_loss(logp, old, torch.ones(3), mask)


def test_kl_term_and_metrics() -> None:
    logp = torch.tensor([[math.log(0.5), math.log(0.25), PAD]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.5), -PAD]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]])
    adv = torch.zeros(1, dtype=F64)
    loss, m = policy_loss(logp, logp.detach(), adv, mask, PolicyLossConfig(kl_coef=0.5),
                          ref_logp=ref)
    # k3 = [ln 2 - 0.5, 1 - ln 2], token mean 0.25, times 0.5; padding ignored
    assert loss.item() == pytest.approx(0.125)
    assert m["policy/kl"].item() == pytest.approx(0.25)
    assert set(m) >= {"loss/policy", "policy/kl", "loss/kl", "policy/clip_frac_low",
                      "policy/clip_frac_high", "policy/ratio_mean"}
    for value in m.values():
        assert value.dim() == 0 and not value.requires_grad


def _extra(loss_type: PolicyLossType, mask: Tensor) -> BaselineInputs:
    """The entropy baselines' inputs for a (B, T) case: entropies of 1 (inf at padding),
    alpha 0.5."""
    ones = torch.where(mask, 1.0, math.inf).to(F64)  # (B, T) garbage at padding
    return BaselineInputs(entropy=ones, old_entropy=ones, clamped_entropy=ones,
                          control_alpha=0.5)


@pytest.mark.parametrize("loss_type", list(PolicyLossType))
def test_padding_garbage_and_empty_batch_give_no_nan(loss_type: PolicyLossType) -> None:
    logp, old, mask = _from_ratios(GRPO_RATIOS)
    cfg = PolicyLossConfig(loss_type=loss_type, kl_coef=0.1)
    ref = torch.full_like(old, -PAD)
    gen = torch.Generator().manual_seed(0)
    loss, m = policy_loss(logp, old, GRPO_ADV, mask, cfg, ref_logp=ref, generator=gen,
                          extra=_extra(loss_type, mask))
    loss.backward()
    assert torch.isfinite(loss) and logp.grad is not None and torch.isfinite(logp.grad).all()
    assert logp.grad[1, 3] == 0.0
    assert all(torch.isfinite(v) for v in m.values())
    none = torch.zeros_like(mask)
    empty, m = policy_loss(logp, old, GRPO_ADV, none, cfg, ref_logp=ref,
                           extra=_extra(loss_type, none))
    assert empty.item() == 0.0 and all(torch.isfinite(v) for v in m.values())


@pytest.mark.parametrize("loss_type", list(PolicyLossType))
def test_dispatcher_matches_the_direct_call(loss_type: PolicyLossType) -> None:
    logp, old, mask = _cov_case([[1.2, 1.1, 1.5], [0.9, 1.0, 1.2]])
    cfg = PolicyLossConfig(loss_type=loss_type)
    ent = torch.ones_like(old)  # (B, T)
    direct = {
        PolicyLossType.GRPO: lambda: grpo_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.CISPO: lambda: cispo_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.CLIP_COV: lambda: clip_cov_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.KL_COV: lambda: kl_cov_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.CE_GPPO: lambda: ce_gppo_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.ERC: lambda: erc_token_loss(logp, old, COV_ADV, mask, ent, ent),
        PolicyLossType.ENTROPIC: lambda: entropic_token_loss(logp, old, COV_ADV, mask),
        PolicyLossType.AENT: lambda: grpo_token_loss(logp, old, COV_ADV, mask),
    }[loss_type]()
    via, _ = policy_token_loss(str(loss_type), logp, old, COV_ADV, mask, cfg,
                               extra=BaselineInputs(entropy=ent, old_entropy=ent))
    torch.testing.assert_close(via, direct[0])


def test_config_coerces_strings() -> None:
    cfg = PolicyLossConfig(loss_type="cispo", aggregation="seq-mean-token-sum-norm")  # type: ignore[arg-type]
    assert cfg.loss_type is PolicyLossType.CISPO
    assert cfg.aggregation is LossAggregation.SEQ_MEAN_TOKEN_SUM_NORM


@pytest.mark.parametrize(("field", "value"), [
    ("loss_type", "ppo"), ("aggregation", "sum"), ("clip_low", -0.1), ("clip_low", 1.0),
    ("clip_high", -0.01), ("clip_high", math.nan), ("kl_coef", -1.0), ("entropy_coef", -1e-3),
    ("high_entropy_quantile", 1.5), ("high_entropy_quantile", -0.1), ("clip_cov_ratio", 0.0),
    ("clip_cov_ratio", 2.0), ("clip_cov_lb", 5.0), ("clip_cov_ub", 0.5), ("kl_cov_ratio", 0.0),
    ("kl_cov_coef", -1.0), ("dual_clip", 1.0), ("ce_gppo_beta1", -0.5),
    ("ce_gppo_beta2", math.inf), ("erc_low", -0.1), ("erc_high", 0.9), ("erc_high", math.nan),
    ("entropic_target", -1.0), ("entropic_kp", -1.0), ("entropic_ki", math.nan),
    ("entropic_high_prob", 1.0), ("entropic_high_prob", 0.0), ("aent_coef", -1e-3),
    ("aent_clamp", 1.0), ("aent_clamp", -0.1), ("loss_type", "gppo"),
])
def test_config_validation(field: str, value: Any) -> None:
    name = "clip_cov_lb" if field == "clip_cov_ub" else field  # the band is checked as a pair
    with pytest.raises(ValueError, match=name):
        replace(PolicyLossConfig(), **{field: value})
