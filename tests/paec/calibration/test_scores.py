"""paec.calibration.scores.token_scores: log-probs, full entropy and top-p entropy of a micro-batch
in one pass, against plain-autograd float64 references of the definitions, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from paec.calibration.features import token_features
from paec.calibration.scores import entropy, token_scores, top_p_entropy
from tests.paec.calibration.test_features import flat_rows, peaked_logits
from tests.paec.calibration.test_features import reference as sort_reference


def batch(n_seq: int, length: int, vocab: int, seed: int, dtype: torch.dtype = torch.float64
          ) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (B, T + 1, V) with peaked and flat rows and a few -inf entries, tokens and a
    completion mask (B, T) valid up to each row's length (at least one position)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_seq, length + 1, vocab, generator=g, dtype=torch.float64)
    spread = torch.rand(n_seq, length + 1, 1, generator=g, dtype=torch.float64)
    # From near-uniform to peaked rows; values a float32 holds exactly, as the features'
    # float32 boundary logit does (so the boundary mask is exact in float64 too).
    x = (x * (0.05 + 3.0 * spread)).float().double()  # (B, T + 1, V)
    x[0, 1, : vocab // 3] = -torch.inf  # masked tokens
    tokens = torch.randint(vocab // 3, vocab, (n_seq, length), generator=g)  # finite logits
    lengths = torch.randint(1, length + 1, (n_seq,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]  # (B, T)
    return x.to(dtype), tokens, mask


def reference(x: Tensor, tokens: Tensor, mask: Tensor, temperature: float, sizes: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Plain autograd in float64: log pi(y) (B, T) (0 outside the mask), H (n,) and H^p (n,)
    over the top-|N| logits of each valid row."""
    z = x[:, : tokens.shape[1]].double() / temperature  # (B, T, V)
    logp_all = torch.log_softmax(z, -1)  # (B, T, V)
    logp = torch.where(mask, logp_all.gather(-1, tokens[..., None]).squeeze(-1), 0.0)
    lp = logp_all[mask]  # (n, V)
    # -p log p with 0 at -inf (a where() after the product would make its gradient NaN).
    ent = -(lp.exp() * torch.where(lp > -torch.inf, lp, 0.0)).sum(-1)  # (n,)
    rows = z[mask]  # (n, V)
    hp = []
    for row, size in zip(rows, sizes.tolist(), strict=True):
        order = row.detach().argsort(descending=True)[:size]
        logq = torch.log_softmax(row[order], -1)
        hp.append(-(logq.exp() * logq).sum())
    return logp, ent, torch.stack(hp)


@pytest.mark.parametrize(("vocab", "chunk", "temperature"), [
    (300, 3, 0.7),    # small nuclei: the top-k path; chunks that do not divide n
    (3000, 4, 1.0),   # flat rows: nuclei above 1024 go by the boundary mask
    (3000, 64, 1.3),  # one chunk holds every row
])
def test_values_and_gradient_match_autograd_float64(vocab: int, chunk: int,
                                                    temperature: float) -> None:
    x, tokens, mask = batch(3, 5, vocab, seed=vocab + chunk)
    f = token_features(x[:, :5][mask] / temperature, 0.9)
    if vocab > 1024:
        assert int((f.nucleus_size > 1024).sum()) >= 2  # the mask path runs
    g = torch.Generator().manual_seed(1)
    w_lp = torch.randn(mask.shape, generator=g, dtype=torch.float64)
    w_h, w_hp = torch.randn(2, len(f), generator=g, dtype=torch.float64)

    xg = x.clone().requires_grad_()
    got = token_scores(xg, tokens, mask, temperature=temperature, entropy=True,
                       nucleus_size=f.nucleus_size, nucleus_min_logit=f.nucleus_min_logit,
                       chunk_size=chunk)
    assert got.entropy is not None and got.top_p_entropy is not None
    ((got.logp * w_lp).sum() + (got.entropy * w_h).sum()
     + (got.top_p_entropy * w_hp).sum()).backward()

    xr = x.clone().requires_grad_()
    logp, ent, hp = reference(xr, tokens, mask, temperature, f.nucleus_size)
    ((logp * w_lp).sum() + (ent * w_h).sum() + (hp * w_hp).sum()).backward()

    torch.testing.assert_close(got.logp, logp.detach(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got.entropy, ent.detach(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got.top_p_entropy, hp.detach(), atol=1e-12, rtol=1e-12)
    assert xg.grad is not None and xr.grad is not None
    torch.testing.assert_close(xg.grad, xr.grad, atol=1e-12, rtol=1e-9)
    assert bool(torch.isfinite(xg.grad).all())  # -inf logits get 0, not NaN


def test_padding_and_the_last_position_get_no_gradient() -> None:
    x, tokens, mask = batch(4, 6, 200, seed=3)
    xg = x.clone().requires_grad_()
    got = token_scores(xg, tokens, mask, entropy=True)
    assert got.entropy is not None
    (got.logp.sum() + got.entropy.sum()).backward()
    assert xg.grad is not None
    assert (got.logp[~mask] == 0).all()
    assert (xg.grad[:, :6][~mask] == 0).all() and (xg.grad[:, 6] == 0).all()
    assert (xg.grad[:, :6][mask].abs().sum(-1) > 0).all()


def test_log_probs_alone_match_and_nothing_else_is_computed() -> None:
    x, tokens, mask = batch(2, 4, 500, seed=4)
    xg = x.clone().requires_grad_()
    got = token_scores(xg, tokens, mask, temperature=0.5)
    assert got.entropy is None and got.top_p_entropy is None
    got.logp.sum().backward()
    xr = x.clone().requires_grad_()
    z = xr[:, :4] / 0.5
    ref = torch.where(mask, torch.log_softmax(z, -1).gather(-1, tokens[..., None]).squeeze(-1),
                      0.0)
    ref.sum().backward()
    torch.testing.assert_close(got.logp, ref.detach(), atol=1e-12, rtol=1e-12)
    assert xg.grad is not None and xr.grad is not None
    torch.testing.assert_close(xg.grad, xr.grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_logits_compute_in_float32_and_get_their_own_dtype_back(
    dtype: torch.dtype,
) -> None:
    x, tokens, mask = batch(3, 5, 2000, seed=5, dtype=dtype)
    f = token_features(x[:, :5][mask], 0.9)
    xg = x.clone().requires_grad_()
    got = token_scores(xg, tokens, mask, entropy=True, nucleus_size=f.nucleus_size,
                       nucleus_min_logit=f.nucleus_min_logit, chunk_size=5)
    assert got.logp.dtype == torch.float32
    assert got.entropy is not None and got.top_p_entropy is not None
    (got.logp.sum() + got.entropy.sum() + got.top_p_entropy.sum()).backward()
    xr = x.double().requires_grad_()
    logp, ent, hp = reference(xr, tokens, mask, 1.0, f.nucleus_size)
    (logp.sum() + ent.sum() + hp.sum()).backward()
    assert xg.grad is not None and xr.grad is not None and xg.grad.dtype == dtype
    torch.testing.assert_close(got.logp.double(), logp.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got.entropy.double(), ent.detach(), atol=1e-4, rtol=1e-5)
    # bf16 logits tie: at a large nucleus's boundary the mask may take a few tied tokens
    # beyond |N| (`mask_is_nucleus`), each worth about 1 / |N| of its mass.
    hp_tol = 1e-4 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got.top_p_entropy.double(), hp.detach(), atol=hp_tol, rtol=0)
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: the gradient is rounded
    torch.testing.assert_close(xg.grad.double(), xr.grad, atol=tol, rtol=tol)


def test_strided_logits_and_no_grad_give_the_same_log_probs() -> None:
    x, tokens, mask = batch(3, 4, 300, seed=6)
    wide = torch.cat([x, x], dim=-1)[..., :300]  # (B, T + 1, V) not contiguous
    assert not wide.is_contiguous()
    with torch.no_grad():
        plain = token_scores(x, tokens, mask).logp
        strided = token_scores(wide, tokens, mask).logp
    assert torch.equal(plain, strided)


def test_bad_shapes_are_refused() -> None:
    x, tokens, mask = batch(2, 4, 50, seed=7)
    with pytest.raises(ValueError, match="logits must be"):
        token_scores(x[:, :3], tokens, mask)  # fewer positions than tokens
    with pytest.raises(ValueError, match="nucleus_size must be"):
        token_scores(x, tokens, mask, nucleus_size=torch.ones(int(mask.sum()) + 1,
                                                               dtype=torch.long))


def test_a_boundary_off_by_a_token_still_takes_the_mask_and_stays_close() -> None:
    # The update's logits round differently from the sampler's: a mask one token short of
    # |N| is still the nucleus, up to that token's small share (no top-k of |N| ~ V).
    x, tokens, mask = batch(2, 3, 4000, seed=8)
    x = x * 0.02  # every valid row flat: nuclei of most of the vocabulary
    f = token_features(x[:, :3][mask], 0.9)
    assert bool((f.nucleus_size > 1024).all())
    shifted = x.clone()
    valid = shifted[:, :3][mask]  # (n, V) a copy
    last = (valid - f.nucleus_min_logit[:, None]).abs().argmin(-1)  # the boundary token
    valid[torch.arange(len(f)), last] -= 1e-9  # drops just below the boundary
    shifted[:, :3][mask] = valid
    exact = token_scores(x, tokens, mask, nucleus_size=f.nucleus_size,
                         nucleus_min_logit=f.nucleus_min_logit).top_p_entropy
    moved = token_scores(shifted, tokens, mask, nucleus_size=f.nucleus_size,
                         nucleus_min_logit=f.nucleus_min_logit).top_p_entropy
    assert exact is not None and moved is not None
    assert not torch.equal(exact, moved)  # the mask lost the boundary token...
    torch.testing.assert_close(moved, exact, atol=1e-3, rtol=0)  # ...worth ~1/|N| nats


# The (N, V) rows API, `entropy` and `top_p_entropy`, against the features' sort reference.


def finite_difference(fn: object, x: Tensor, eps: float = 1e-6) -> Tensor:
    assert callable(fn)
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + eps
        up = float(fn(x))
        flat[i] = old - eps
        down = float(fn(x))
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def test_entropy_gradient_matches_finite_differences_f64() -> None:
    x = peaked_logits(5, 11, seed=4).double()
    x[1, 3] = -torch.inf
    w = torch.randn(5, dtype=torch.float64)

    def fn(z: Tensor) -> Tensor:
        return (entropy(z.double(), chunk_size=2).double() * w).sum()

    xg = x.clone().requires_grad_()
    fn(xg).backward()
    assert xg.grad is not None
    finite = torch.isfinite(x)
    fd = finite_difference(fn, x.clone())
    torch.testing.assert_close(xg.grad[finite], fd[finite], atol=1e-4, rtol=1e-4)
    assert (xg.grad[~finite] == 0).all()
    torch.testing.assert_close(entropy(x).double(), sort_reference(x, 1.0)["entropy"], atol=1e-5,
                               rtol=1e-5)


def test_top_p_entropy_gradient_matches_finite_differences_f64() -> None:
    x = peaked_logits(6, 13, seed=8).double()
    sizes = token_features(x, 0.8).nucleus_size
    assert sizes.max() > 1  # the gradient is non-trivial somewhere
    w = torch.randn(6, dtype=torch.float64)

    def fn(z: Tensor) -> Tensor:
        return (top_p_entropy(z, sizes, chunk_size=4).double() * w).sum()

    xg = x.clone().requires_grad_()
    value = top_p_entropy(xg, sizes, chunk_size=4)
    torch.testing.assert_close(value.double(), sort_reference(x, 0.8)["top_p_entropy"], atol=1e-5,
                               rtol=1e-5)
    (value.double() * w).sum().backward()
    assert xg.grad is not None
    # The nucleus is held fixed, as in the penalty: finite differences stay inside it.
    torch.testing.assert_close(xg.grad, finite_difference(fn, x.clone()), atol=1e-4, rtol=1e-4)
    outside = torch.ones_like(x, dtype=torch.bool)
    order = x.argsort(dim=-1, descending=True)
    for r in range(6):
        outside[r, order[r, : int(sizes[r])]] = False
    assert (xg.grad[outside] == 0).all()  # tokens outside the nucleus get no gradient


def test_large_nuclei_by_mask_match_the_top_k_path() -> None:
    g = torch.Generator().manual_seed(11)
    # Flat (nuclei > 1024), in values a float32 holds exactly, as the features' float32
    # boundary logit does: the mask then holds exactly |N| tokens.
    x = (torch.randn(10, 3000, generator=g, dtype=torch.float64) * 0.5).float().double()
    x[0, :5] += 12.0  # one peaked row in the same chunk goes the top-k way
    x[1] = 0.0  # all tied: the mask would hold 3000 tokens, not |N|: falls back to the top-k
    f = token_features(x, 0.9005)  # p * V not an integer: no rounding tie on row 1
    assert int((f.nucleus_size > 1024).sum()) == 9
    w = torch.randn(10, dtype=torch.float64, generator=g)
    grads, values = [], []
    for boundary in (None, f.nucleus_min_logit):
        xg = x.clone().requires_grad_()
        value = top_p_entropy(xg, f.nucleus_size, nucleus_min_logit=boundary, chunk_size=4)
        (value * w).sum().backward()
        assert xg.grad is not None
        grads.append(xg.grad)
        values.append(value.detach())
    torch.testing.assert_close(values[1], values[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(values[1], sort_reference(x, 0.9005)["top_p_entropy"], atol=1e-5,
                               rtol=1e-5)


def test_flat_top_p_entropy_by_mask_matches_float64_reference_and_gradient() -> None:
    x = flat_rows(6, 4001, seed=23).double()
    x[2, 3000:] = -torch.inf
    f = token_features(x, 0.9)
    assert bool((f.nucleus_size > 1024).all())
    xg = x.clone().requires_grad_()
    w = torch.randn(6, dtype=torch.float64)
    value = top_p_entropy(xg, f.nucleus_size, nucleus_min_logit=f.nucleus_min_logit)
    (value * w).sum().backward()
    assert xg.grad is not None
    torch.testing.assert_close(value.detach(), sort_reference(x, 0.9)["top_p_entropy"], atol=1e-9,
                               rtol=1e-9)
    # Brute force: dH^p/dz = -q (log q + H^p) inside the nucleus, 0 outside.
    grad = torch.zeros_like(x)
    for r in range(6):
        order = x[r].argsort(descending=True)[: int(f.nucleus_size[r])]
        logq = torch.log_softmax(x[r, order], -1)
        grad[r, order] = -logq.exp() * (logq + value[r].detach()) * w[r]
    torch.testing.assert_close(xg.grad, grad, atol=1e-12, rtol=1e-9)
    assert bool(torch.isfinite(xg.grad).all())
