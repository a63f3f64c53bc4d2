"""paec.calibration.penalty: the hinge, its gradient, and micro-batch equivalence of the PAEC
term."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.features import token_features
from paec.calibration.penalty import (
    PAECBatch,
    hinge_at,
    lower_bound_penalty,
    masked_mean_entropy,
)
from paec.calibration.scores import top_p_entropy
from paec.config.calibration import PAECConfig


def logits_batch(n: int = 24, v: int = 97, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=g, dtype=torch.float64) * 2.0
    z[:, 0] += torch.rand(n, generator=g, dtype=torch.float64) * 8.0
    return z


def frozen_anchor(anchor: float, ratio: float = 0.8) -> AnchorState:
    state = AnchorState(warmup_steps=1, floor_ratio=ratio)
    state.observe(anchor)
    return state


def test_penalty_is_zero_with_zero_gradient_above_the_floor() -> None:
    h = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    value = lower_bound_penalty(h, floor=1.0)
    value.backward()
    assert float(value.detach()) == 0.0 and h.grad is not None and float(h.grad) == 0.0


def test_penalty_below_the_floor_is_a_squared_hinge() -> None:
    h = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    value = lower_bound_penalty(h, floor=1.0)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.09)
    assert h.grad is not None and float(h.grad) == pytest.approx(-0.6)  # -2 (1.0 - 0.7)


def test_penalty_gradient_matches_finite_differences_f64() -> None:
    z = logits_batch(n=6, v=9)
    f = token_features(z, 0.9)
    weights = torch.rand(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def loss(x: Tensor) -> Tensor:
        hp = top_p_entropy(x, f.nucleus_size).double()
        return lower_bound_penalty(masked_mean_entropy(hp, weights), floor=5.0)

    x = z.clone().requires_grad_()
    loss(x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    fd = torch.zeros_like(z)
    eps = 1e-6
    for idx in range(z.numel()):
        up, down = z.clone().view(-1), z.clone().view(-1)
        up[idx] += eps
        down[idx] -= eps
        fd.view(-1)[idx] = (loss(up.view_as(z)) - loss(down.view_as(z))) / (2 * eps)
    torch.testing.assert_close(x.grad, fd, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bonus", [0.0, 0.3])
@pytest.mark.parametrize("splits", [[24], [12, 12], [5, 7, 3, 9]])
def test_micro_batches_give_the_whole_batch_loss_and_gradient(bonus: float,
                                                              splits: list[int]) -> None:
    z = logits_batch()
    valid = torch.ones(24, dtype=torch.bool)
    valid[[3, 17, 18]] = False  # padding inside the batch
    cfg = PAECConfig(entropy_bonus=bonus)
    f = token_features(z, cfg.top_p)
    batch = PAECBatch.build(f, frozen_anchor(anchor=10.0), cfg, valid)  # far below the floor
    assert batch.penalty > 0

    # The reference: the formula on the whole batch, differentiated by autograd.
    x_ref = z.clone().requires_grad_()
    h_bar = masked_mean_entropy(top_p_entropy(x_ref, f.nucleus_size).double(),
                                batch.mask.weights.double(), cfg.eps)
    assert float(h_bar.detach()) == pytest.approx(batch.masked_entropy, rel=1e-6)
    assert batch.floor is not None
    ref = cfg.penalty_weight * lower_bound_penalty(h_bar, batch.floor) - bonus * h_bar
    ref.backward()

    x = z.clone().requires_grad_()
    total = torch.zeros((), dtype=torch.float64)
    start = 0
    for size in splits:
        index = slice(start, start + size)
        term, metrics = batch.loss(top_p_entropy(x[index], f.nucleus_size[index]).double(),
                                   index)
        assert metrics == {"loss/paec": term.detach()} and not metrics["loss/paec"].requires_grad
        total = total + term
        start += size
    total.backward()
    assert float(total.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    assert x.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-7, rtol=1e-5)
    assert (x.grad[~valid] == 0).all()  # padding gets no gradient


def test_no_penalty_while_the_anchor_warms_up() -> None:
    z = logits_batch().requires_grad_()
    f = token_features(z, 0.9)
    batch = PAECBatch.build(f, AnchorState(warmup_steps=4, floor_ratio=0.8), PAECConfig())
    loss, _ = batch.loss(top_p_entropy(z, f.nucleus_size), slice(None))
    loss.backward()
    assert batch.floor is None and batch.penalty == 0.0 and float(loss.detach()) == 0.0
    assert z.grad is not None and (z.grad == 0).all()
    assert "paec/anchor" not in batch.metrics()


def test_no_gradient_above_the_floor() -> None:
    z = logits_batch().requires_grad_()
    f = token_features(z, 0.9)
    batch = PAECBatch.build(f, frozen_anchor(anchor=0.01), PAECConfig())
    batch.loss(top_p_entropy(z, f.nucleus_size), slice(None))[0].backward()
    assert batch.penalty == 0.0 and z.grad is not None and (z.grad == 0).all()


@pytest.mark.parametrize(("anchor", "bonus", "needed"), [
    (None, 0.0, False),   # warming up: no floor
    (0.01, 0.0, False),   # far above the floor
    (50.0, 0.0, True),    # below the floor: the hinge has a slope
    (0.01, 0.1, True),    # a bonus always has a gradient
])
def test_the_trainer_may_skip_the_term_exactly_when_it_has_no_gradient(
        anchor: float | None, bonus: float, needed: bool) -> None:
    z = logits_batch().requires_grad_()
    f = token_features(z, 0.9)
    state = AnchorState(warmup_steps=4, floor_ratio=0.8) if anchor is None else frozen_anchor(
        anchor)
    batch = PAECBatch.build(f, state, PAECConfig(entropy_bonus=bonus))
    loss, _ = batch.loss(top_p_entropy(z, f.nucleus_size), slice(None))
    loss.backward()
    assert z.grad is not None
    assert batch.needs_gradient is needed
    if not needed:  # skipping it changes nothing: the value and the gradient are 0
        assert float(loss.detach()) == 0.0 and (z.grad == 0).all()
    else:
        assert bool((z.grad != 0).any())


def test_a_skipped_term_is_exactly_zero_with_its_metric() -> None:
    """The trainer passes no H^p when the term has no gradient: the term is then 0."""
    f = token_features(logits_batch(), 0.9)
    batch = PAECBatch.build(f, frozen_anchor(anchor=0.01), PAECConfig())
    assert not batch.needs_gradient
    term, metrics = batch.loss(None, slice(0, 5))
    assert float(term) == 0.0 and not term.requires_grad
    assert metrics.keys() == {"loss/paec"} and float(metrics["loss/paec"]) == 0.0


@pytest.mark.parametrize(("h_bar", "floor"), [(0.7, 1.0), (1.2, 1.0), (1.0, 1.0),
                                              (0.123456789, 2.718281828)])
def test_the_batch_takes_value_and_slope_of_the_one_hinge(h_bar: float, floor: float) -> None:
    """`hinge_at` is `lower_bound_penalty` and its autograd derivative at a float H_bar."""
    value, slope = hinge_at(h_bar, floor)
    h = torch.tensor(h_bar, dtype=torch.float64, requires_grad=True)
    lower_bound_penalty(h, floor).backward()
    assert value == lower_bound_penalty(h_bar, floor) == pytest.approx(float(
        lower_bound_penalty(h.detach(), floor)), rel=1e-15)
    assert h.grad is not None and slope == float(h.grad) == -2.0 * max(0.0, floor - h_bar)
    assert hinge_at(None, floor) == hinge_at(h_bar, None) == (0.0, 0.0)


def test_batch_metrics_by_hand() -> None:
    z = logits_batch()
    valid = torch.ones(24, dtype=torch.bool)
    valid[:4] = False
    f = token_features(z, 0.9)
    batch = PAECBatch.build(f, frozen_anchor(anchor=2.0, ratio=0.5), PAECConfig(), valid)
    m = batch.metrics()
    w = batch.mask.weights[valid]
    assert m["paec/anchor"] == 2.0 and m["paec/floor"] == 1.0
    assert m["entropy"] == pytest.approx(float(f.entropy[valid].mean()))
    assert m["entropy/top_p"] == pytest.approx(float(f.top_p_entropy[valid].mean()))
    assert m["entropy/masked"] == pytest.approx(
        float((w * f.top_p_entropy[valid]).sum() / w.sum()), rel=1e-6)
    assert m["paec/mask_mean"] == pytest.approx(float(w.mean()))
    assert m["paec/mask_frac_above_half"] == pytest.approx(float((w > 0.5).double().mean()))
    assert m["paec/penalty"] == pytest.approx(max(0.0, 1.0 - m["entropy/masked"]) ** 2)
    assert m["paec/score_threshold"] == float(batch.mask.threshold)
    assert 0.0 < m["paec/competition_mean"] <= 1.0
