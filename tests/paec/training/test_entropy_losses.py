"""Float64 references for the entropy baselines of paec.training.entropy_losses (CE-GPPO, ERC,
EntroPIC, AEnt's clamped entropy) and EntroPIC's controller: every value and gradient is
recomputed here token by token with plain Python floats, from the authors' formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from paec.config.loss import LossAggregation, PolicyLossConfig, PolicyLossType
from paec.training.entropy_control import EntropyController
from paec.training.entropy_losses import (
    BaselineInputs,
    ce_gppo_token_loss,
    clamped_entropy,
    dual_clip_token_loss,
    entropic_extra_term,
    erc_token_loss,
    high_prob_counts,
)
from paec.training.losses import aggregate, policy_loss

F64 = torch.float64
PAD = 1000.0  # garbage log-prob at padding

# Rows: A = +2 (row 0) and -1 (row 1); ratios inside, above and below [0.8, 1.28], and one
# (r = 4 with A < 0) past the dual clip c = 3. NaN marks padding.
RATIOS = [[1.25, 1.5, 0.5, 1.0], [0.85, 4.0, 0.5, math.nan]]
ADV = [2.0, -1.0]
OLD = [[-1.0, -0.5, -2.0, -0.05], [-0.3, -1.4, -0.7, -1.0]]
# EntroPIC's K (pi_theta(y) > 0.95): (0, 3) with log pi = -0.05 and (1, 1) with -1.4 + log 4


def _case() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(logp leaf with grad, old_logp, mask, advantages (B,)) with r = exp(logp - old)."""
    r = torch.tensor(RATIOS, dtype=F64)  # (B, T)
    old = torch.tensor(OLD, dtype=F64)  # (B, T)
    mask = ~r.isnan()  # (B, T)
    logp = torch.where(mask, old + r.log(), PAD).requires_grad_()  # (B, T)
    return logp, old, mask, torch.tensor(ADV, dtype=F64)


def _cells() -> list[tuple[int, int, float, float]]:
    """(i, t, r, A) of every valid token."""
    return [(i, t, r, ADV[i]) for i, row in enumerate(RATIOS) for t, r in enumerate(row)
            if not math.isnan(r)]


def _ref_dual_clip(r: float, a: float, lo: float = 0.2, hi: float = 0.28,
                   c: float = 3.0) -> tuple[float, float]:
    """verl's dual-clip PPO for one token: (value, d value / d log pi)."""
    unclipped, clipped = -a * r, -a * min(max(r, 1 - lo), 1 + hi)
    value, grad = (clipped, 0.0) if clipped > unclipped else (unclipped, -a * r)
    if a < 0 and value > -a * c:
        value, grad = -a * c, 0.0
    return value, grad


def _grid(values: dict[tuple[int, int], float]) -> Tensor:
    out = torch.zeros(2, 4, dtype=F64)  # (B, T)
    for (i, t), v in values.items():
        out[i, t] = v
    return out


def _check(loss: Tensor, logp: Tensor, values: dict[tuple[int, int], float],
           grads: dict[tuple[int, int], float]) -> None:
    torch.testing.assert_close(loss, _grid(values))
    loss.sum().backward()
    assert logp.grad is not None
    torch.testing.assert_close(logp.grad, _grid(grads))


def test_dual_clip_surrogate_matches_the_per_token_reference() -> None:
    logp, old, mask, adv = _case()
    loss, m = dual_clip_token_loss(logp, old, adv, mask)
    ref = {(i, t): _ref_dual_clip(r, a) for i, t, r, a in _cells()}
    _check(loss, logp, {k: v[0] for k, v in ref.items()}, {k: v[1] for k, v in ref.items()})
    assert m["policy/dual_clip_frac"].item() == pytest.approx(1 / 7)  # r = 4, A = -1


def _ref_ce_gppo(r: float, a: float, b1: float, b2: float, lo: float = 0.2, hi: float = 0.28,
                 c: float = 3.0) -> tuple[float, float]:
    """CE-GPPO for one token: r / sg(r) is 1 in value and has d/dlog pi = 1."""
    if a < 0 and r < 1 - lo:
        value = grad = -b1 * (1 - lo) * a
    elif a > 0 and r > 1 + hi:
        value = grad = -b2 * (1 + hi) * a
    else:
        value, grad = -r * a, -r * a
    if a < 0 and value > -a * c:
        value, grad = -a * c, 0.0
    return value, grad


@pytest.mark.parametrize(("b1", "b2"), [(0.75, 1.0), (0.5, 0.25), (0.0, 0.0)])
def test_ce_gppo_matches_the_per_token_reference(b1: float, b2: float) -> None:
    logp, old, mask, adv = _case()
    loss, m = ce_gppo_token_loss(logp, old, adv, mask, beta1=b1, beta2=b2)
    ref = {(i, t): _ref_ce_gppo(r, a, b1, b2) for i, t, r, a in _cells()}
    _check(loss, logp, {k: v[0] for k, v in ref.items()}, {k: v[1] for k, v in ref.items()})
    # low: (A < 0, r = 0.5); high: (A > 0, r = 1.5); both keep a gradient when beta > 0
    assert m["policy/clip_frac_low"].item() == pytest.approx(1 / 7)
    assert m["policy/clip_frac_high"].item() == pytest.approx(1 / 7)


def test_ce_gppo_with_unit_betas_keeps_ppo_values_but_not_its_zero_gradients() -> None:
    logp, old, mask, adv = _case()
    ce, _ = ce_gppo_token_loss(logp, old, adv, mask, beta1=1.0, beta2=1.0)
    ppo, _ = dual_clip_token_loss(logp, old, adv, mask)
    torch.testing.assert_close(ce, ppo)  # same values: beta = 1 is the clipped PPO value
    (g,) = torch.autograd.grad(ce.sum(), logp)
    assert g[0, 1].item() == pytest.approx(-1.28 * 2.0)  # clipped in PPO, a gradient here


# H under pi_theta and pi_old: rho = 1, 1.1, 0.97, 0.9, 0.976, 1 (0 / 0), 0.75; padding
H_NEW = [[1.0, 1.1, 0.97, 0.45], [2.0, 0.0, 0.9, 5.0]]
H_OLD = [[1.0, 1.0, 1.0, 0.5], [2.05, 0.0, 1.2, 1.0]]


@pytest.mark.parametrize(("low", "high"), [(0.95, 1.05), (0.8, 1.2)])
def test_erc_matches_the_per_token_reference(low: float, high: float) -> None:
    logp, old, mask, adv = _case()
    new_h, old_h = torch.tensor(H_NEW, dtype=F64), torch.tensor(H_OLD, dtype=F64)
    loss, m = erc_token_loss(logp, old, adv, mask, new_h, old_h, low=low, high=high)
    values, grads, kept = {}, {}, 0
    for i, t, r, a in _cells():
        value, grad = _ref_dual_clip(r, a)
        rho = (H_NEW[i][t] + 1e-8) / (H_OLD[i][t] + 1e-8)
        inside = low < rho < high
        kept += inside
        values[i, t], grads[i, t] = value, grad if inside else 0.0
    _check(loss, logp, values, grads)
    assert m["policy/erc_kept_frac"].item() == pytest.approx(kept / 7)
    assert 0 < kept < 7  # the case exercises both sides of the band


def test_erc_entropy_carries_no_gradient_into_the_loss() -> None:
    logp, old, mask, adv = _case()
    new_h = torch.tensor(H_NEW, dtype=F64, requires_grad=True)
    loss, _ = erc_token_loss(logp, old, adv, mask, new_h, torch.tensor(H_OLD, dtype=F64))
    grads = torch.autograd.grad(loss.sum(), [logp, new_h], allow_unused=True)
    assert grads[0] is not None and grads[1] is None


def test_entropic_extra_term_matches_the_per_token_reference() -> None:
    logp, old, mask, adv = _case()
    term, in_k, m = entropic_extra_term(logp, old, adv, mask, high_prob=0.95)
    values, grads = {}, {}
    for i, t, r, a in _cells():
        if OLD[i][t] + math.log(r) > math.log(0.95):
            values[i, t] = grads[i, t] = -r * abs(a)
    assert sorted(values) == [(0, 3), (1, 1)]
    _check(term, logp, values, grads)
    assert in_k.sum().item() == 2 and m["policy/high_prob_frac"].item() == pytest.approx(2 / 7)
    assert high_prob_counts(logp, mask, 0.95) == (2.0, 2.0)


@pytest.mark.parametrize("mode", list(LossAggregation))
def test_entropic_policy_loss_adds_alpha_times_the_mean_over_k(mode: LossAggregation) -> None:
    logp, old, mask, adv = _case()
    cfg = PolicyLossConfig(loss_type=PolicyLossType.ENTROPIC, aggregation=mode)
    alpha, n_k = -0.4, 5.0  # a whole-batch |K| larger than this call's 2
    extra = BaselineInputs(control_alpha=alpha, high_prob_tokens=n_k, high_prob_seqs=3.0)
    loss, m = policy_loss(logp, old, adv, mask, cfg, extra=extra, total_tokens=7.0,
                          total_seqs=2.0, max_len=4)
    ref = {(i, t): _ref_dual_clip(r, a) for i, t, r, a in _cells()}
    base = aggregate(_grid({key: v[0] for key, v in ref.items()}), mask, mode,
                     total_tokens=7.0, total_seqs=2.0, max_len=4)
    k = {(i, t): -r * abs(a) for i, t, r, a in _cells()
         if OLD[i][t] + math.log(r) > math.log(0.95)}
    if mode is LossAggregation.TOKEN_MEAN:
        mean_k = sum(k.values()) / n_k
    elif mode is LossAggregation.SEQ_MEAN_TOKEN_MEAN:  # each row's mean over its K tokens
        rows = {i for i, _ in k}
        mean_k = sum(sum(v for (i, _), v in k.items() if i == row)
                     / sum(1 for (i, _) in k if i == row) for row in rows) / 3.0
    else:
        mean_k = sum(k.values()) / 4 / 3.0
    assert loss.item() == pytest.approx(base.item() + alpha * mean_k)
    assert m["loss/entropic"].item() == pytest.approx(alpha * mean_k)


def _ref_clamped_entropy(row: list[float], clamp: float) -> tuple[float, list[float]]:
    """(Hc, dHc/dz) of one row: drop the int(V * clamp) lowest logits, softmax the rest."""
    k = int(len(row) * clamp)
    order = sorted(range(len(row)), key=lambda v: row[v])
    kept = sorted(order[k:])
    top = max(row[v] for v in kept)
    s = sum(math.exp(row[v] - top) for v in kept)
    q = {v: math.exp(row[v] - top) / s for v in kept}
    h = -sum(p * math.log(p) for p in q.values())
    # dH/dz_v = -q_v (log q_v + H) on the kept logits, 0 on the removed ones
    return h, [-q[v] * (math.log(q[v]) + h) if v in q else 0.0 for v in range(len(row))]


@pytest.mark.parametrize("clamp", [0.0, 0.2, 0.3, 0.5])
def test_clamped_entropy_matches_the_reference_value_and_gradient(clamp: float) -> None:
    rows = [[2.0, -1.0, 0.5, 0.0, -3.0, 1.5, -0.5, 0.25, -2.0, 1.0],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]
    logits = torch.tensor(rows, dtype=F64, requires_grad=True)  # (2, 10)
    upstream = torch.tensor([1.0, -2.0], dtype=F64)
    values = clamped_entropy(logits, clamp)
    (values * upstream).sum().backward()
    assert logits.grad is not None
    for n, row in enumerate(rows):
        h, grad = _ref_clamped_entropy(row, clamp)
        assert values[n].item() == pytest.approx(h, rel=1e-12)
        torch.testing.assert_close(logits.grad[n], upstream[n] * torch.tensor(grad, dtype=F64))


def test_clamped_entropy_is_finite_with_minus_inf_logits() -> None:
    logits = torch.tensor([[0.0, 1.0, -math.inf, -math.inf, 2.0]], requires_grad=True)
    value = clamped_entropy(logits, 0.2)  # removes one of the -inf logits; one stays
    value.sum().backward()
    assert torch.isfinite(value).all() and logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_aent_policy_loss_subtracts_the_clamped_entropy_bonus() -> None:
    logp, old, mask, adv = _case()
    hc = torch.tensor([[0.5, 1.0, 1.5, 2.0], [0.25, 0.75, 1.25, 99.0]], dtype=F64,
                      requires_grad=True)
    cfg = PolicyLossConfig(loss_type=PolicyLossType.AENT, aent_coef=0.1)
    loss, m = policy_loss(logp, old, adv, mask, cfg, extra=BaselineInputs(clamped_entropy=hc))
    grpo, _ = policy_loss(logp, old, adv, mask, PolicyLossConfig())
    bonus = 0.1 * (0.5 + 1.0 + 1.5 + 2.0 + 0.25 + 0.75 + 1.25) / 7  # padding's 99 ignored
    assert loss.item() == pytest.approx(grpo.item() - bonus)
    assert m["loss/clamped_entropy_bonus"].item() == pytest.approx(bonus)
    assert m["entropy/clamped"].item() == pytest.approx(7.25 / 7)
    (g,) = torch.autograd.grad(loss, hc)
    torch.testing.assert_close(g, torch.where(mask, -0.1 / 7, 0.0).to(F64))


def test_controller_follows_the_pi_law_with_the_integral_of_earlier_errors() -> None:
    ctrl = EntropyController(kp=1.0, ki=0.5, target=0.1)
    entropies = [0.5, 0.4, -0.3, 0.1, 3.0]
    integral, alphas = 0.0, []
    for h in entropies:
        alphas.append(min(1.0, max(-1.0, 1.0 * (h - 0.1) + 0.5 * integral)))
        integral += h - 0.1
    assert [ctrl.update(h) for h in entropies] == pytest.approx(alphas)
    assert ctrl.integral == pytest.approx(integral) and alphas[-1] == 1.0  # clipped
    restored = EntropyController(kp=1.0, ki=0.5, target=0.1)
    restored.load_state_dict(ctrl.state_dict())
    assert restored == ctrl and restored.update(0.2) == ctrl.update(0.2)
    with pytest.raises(ValueError, match="entropy"):
        ctrl.update(math.nan)


@pytest.mark.parametrize("loss_type", [PolicyLossType.CE_GPPO, PolicyLossType.ERC,
                                       PolicyLossType.ENTROPIC, PolicyLossType.AENT])
def test_every_metric_of_the_baselines_is_documented(loss_type: PolicyLossType) -> None:
    logp, old, mask, adv = _case()
    ones = torch.ones_like(old)  # (B, T)
    extra = BaselineInputs(entropy=ones, old_entropy=ones, clamped_entropy=ones,
                           control_alpha=0.5)
    _, m = policy_loss(logp, old, adv, mask, PolicyLossConfig(loss_type=loss_type),
                       extra=extra)
    names = set(m) | set(EntropyController(1.0, 0.01, 0.1).metrics())
    docs = (Path(__file__).parents[3] / "docs" / "metrics.md").read_text()
    assert [n for n in sorted(names) if f"`{n}`" not in docs] == []
