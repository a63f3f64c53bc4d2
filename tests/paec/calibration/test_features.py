"""paec.calibration.features against a float64 brute-force reference built by a full sort."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from paec.calibration.features import token_entropy, token_features
from paec.calibration.kernels import Workspace, topk


def reference(logits: Tensor, p: float) -> dict[str, Tensor]:
    """Definitions of docs/method.md, in float64, by full sort, one row at a time."""
    z = logits.double()
    out: dict[str, list[float]] = {"entropy": [], "top_p_entropy": [], "nucleus_size": [],
                                   "top2_gap": []}
    for row in z:
        probs = torch.softmax(row, dim=-1)
        plogp = torch.where(probs > 0, probs * probs.log(), torch.zeros_like(probs))
        out["entropy"].append(float(-plogp.sum()))
        sp, _ = probs.sort(descending=True)
        n = 1
        while n < len(sp) and float(sp[:n].sum()) < p and float(sp[n]) > 0:
            n += 1
        q = sp[:n] / sp[:n].sum()
        out["top_p_entropy"].append(float(-(q * q.log()).sum()))
        out["nucleus_size"].append(n)
        top = row.sort(descending=True).values
        out["top2_gap"].append(float(top[0] - top[1]))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def assert_matches(logits: Tensor, p: float, atol: float, **kw: int) -> None:
    ref = reference(logits, p)
    got = token_features(logits, p, **kw)
    # The boundary logit is the |N|-th largest logit of each row.
    nth = logits.float().sort(dim=-1, descending=True).values.gather(
        1, (got.nucleus_size - 1)[:, None]).squeeze(1)
    assert torch.equal(got.nucleus_min_logit, nth)
    torch.testing.assert_close(token_entropy(logits, chunk_size=kw.get("chunk_size")),
                               got.entropy, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.entropy.double(), ref["entropy"], atol=atol, rtol=1e-5)
    torch.testing.assert_close(got.top_p_entropy.double(), ref["top_p_entropy"], atol=atol,
                               rtol=1e-5)
    assert torch.equal(got.nucleus_size, ref["nucleus_size"].long())
    torch.testing.assert_close(got.top2_gap.double(), ref["top2_gap"], atol=atol, rtol=1e-5)


def peaked_logits(n: int, v: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """A mix of rows like a language model's: mostly peaked, some flat (fallback paths)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=g) * 2.0
    boost = torch.rand(n, 1, generator=g) * 14.0  # 0: flat row .. 14: one-token row
    z[:, : min(5, v)] += boost * torch.linspace(1.0, 0.3, min(5, v))
    return z[:, torch.randperm(v, generator=g)].to(dtype)


@pytest.mark.parametrize(("n", "v", "chunk", "top_k"), [
    (37, 1000, 8, 4),      # chunk does not divide N; tiny k: most rows take the fallbacks
    (64, 5003, 13, 8),     # V prime, block tail of 11 columns
    (16, 20011, 5, 16),    # block-maxima top-k path (k * 64 * 4 < V)
    (10, 7, 3, 64),        # k > V
])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_features_match_sort_reference_fp32(n: int, v: int, chunk: int, top_k: int,
                                            p: float) -> None:
    assert_matches(peaked_logits(n, v, seed=n + v), p, atol=2e-5, chunk_size=chunk, top_k=top_k)


def test_features_match_sort_reference_bf16() -> None:
    logits = peaked_logits(48, 3001, seed=3, dtype=torch.bfloat16)
    # The reference sees the same bf16 values upcast; features compute in float32.
    assert_matches(logits, 0.9, atol=2e-5, chunk_size=7, top_k=8)


def test_top1_mass_above_p_gives_zero_top_p_entropy_and_one_token() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0], [3.0, 1.0, 0.0, -1.0]])
    f = token_features(logits, 0.5)
    assert f.nucleus_size[0] == 1 and f.top_p_entropy[0] == 0.0
    assert f.entropy[0] > 0.0  # the full entropy still sees the tail
    assert_matches(logits, 0.5, atol=1e-6)


def test_p_one_equals_full_entropy() -> None:
    logits = peaked_logits(20, 301, seed=5)
    f = token_features(logits, 1.0, top_k=4, chunk_size=6)
    torch.testing.assert_close(f.top_p_entropy, f.entropy, atol=2e-5, rtol=1e-5)


def test_uniform_rows_have_log_nucleus_entropy() -> None:
    v = 1000
    f = token_features(torch.zeros(3, v), 0.9005)
    # Every token has 1/V; the nucleus is the first 901 tokens, renormalised: log 901.
    # (p * V is not an integer: at exactly 900 tokens the boundary is a rounding tie.)
    assert torch.equal(f.nucleus_size, torch.full((3,), 901))
    torch.testing.assert_close(f.top_p_entropy, torch.full((3,), math.log(901)))
    torch.testing.assert_close(f.entropy, torch.full((3,), math.log(v)))
    assert torch.equal(f.top2_gap, torch.zeros(3))


def test_exact_ties() -> None:
    logits = torch.tensor([[2.0, 2.0, 0.0, 0.0, 0.0], [1.0, 3.0, 3.0, 3.0, -2.0]])
    f = token_features(logits, 0.6)
    assert torch.equal(f.top2_gap, torch.zeros(2))
    assert_matches(logits, 0.6, atol=1e-6)


def test_vocabulary_of_two() -> None:
    logits = torch.tensor([[0.3, -0.2], [0.0, 0.0], [5.0, -5.0]])
    # p = 0.5 on the tied row would put the boundary exactly on a rounding tie: avoid it.
    for p in (0.45, 0.9, 1.0):
        assert_matches(logits, p, atol=1e-6)


def test_minus_inf_logits() -> None:
    logits = peaked_logits(12, 500, seed=9)
    logits[:, 250:] = -torch.inf
    logits[3, 1:] = -torch.inf  # one finite token: zero entropies, infinite gap
    f = token_features(logits, 0.9, top_k=4, chunk_size=5)
    assert f.entropy[3] == 0.0 and f.top_p_entropy[3] == 0.0 and f.nucleus_size[3] == 1
    assert math.isinf(float(f.top2_gap[3]))
    assert torch.isfinite(f.entropy).all() and torch.isfinite(f.top_p_entropy).all()
    assert_matches(logits, 0.9, atol=2e-5, top_k=4, chunk_size=5)


def test_large_logit_offset_keeps_precision() -> None:
    logits = peaked_logits(8, 2000, seed=2) + 80.0
    assert_matches(logits, 0.9, atol=3e-5)


@pytest.mark.parametrize("v", [64 * 40, 64 * 40 + 17])
def test_block_topk_is_exact_with_ties(v: int) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-5, 5, (9, v), generator=g).float()  # many exact ties
    vals, idx = topk(z, 8)
    assert torch.equal(vals, torch.topk(z, 8).values)
    assert torch.equal(z.gather(1, idx), vals)


def test_features_need_no_autograd_graph() -> None:
    logits = peaked_logits(6, 300, seed=1).requires_grad_()
    f = token_features(logits, 0.9)
    for t in (f.entropy, f.top_p_entropy, f.top2_gap):
        assert not t.requires_grad


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="V >= 2"):
        token_features(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="top_p"):
        token_features(torch.zeros(3, 4), 0.0)


def flat_rows(n: int, v: int, seed: int) -> Tensor:
    """Rows like an untrained model's: near-uniform (nuclei of most of the vocabulary), so
    that the top-k tiers fall short and the histogram search decides the boundary."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g) * torch.linspace(0.05, 1.5, n)[:, None]


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99, 1.0])
def test_flat_rows_match_sort_reference(p: float) -> None:
    logits = flat_rows(12, 20011, seed=21)
    assert int((token_features(logits, p).nucleus_size > 1024).sum()) >= 10
    assert_matches(logits, p, atol=2e-5, chunk_size=5)


def test_flat_rows_with_ties_uniform_and_minus_inf_match_sort_reference() -> None:
    v = 9001
    g = torch.Generator().manual_seed(4)
    logits = flat_rows(10, v, seed=22)
    logits[0] = 0.0  # exactly uniform: one crowded bin, the sort fallback
    logits[1] = torch.randint(0, 3, (v,), generator=g).float() * 0.01  # 3 values: big ties
    logits[2] = torch.randint(0, 300, (v,), generator=g).float() * 1e-3  # ties in the bins
    logits[3, 4000:] = -torch.inf  # masked tokens in a flat row
    logits[4, ::2] = -torch.inf
    logits[5, :3] = 60.0  # three huge logits: the rest is more than 40 nats down
    logits[6] = logits[6] * 30.0  # a wide row: values below the histogram's 40-nat range
    # p * (number of finite tokens) is never an integer here: no rounding ties at the boundary.
    assert_matches(logits, 0.9003, atol=2e-5, chunk_size=4)
    assert_matches(logits, 0.3001, atol=2e-5, chunk_size=3, top_k=4)


def test_a_reused_workspace_changes_no_result() -> None:
    space = Workspace()
    calls = [flat_rows(12, 20011, seed=30), peaked_logits(40, 20011, seed=31),
             flat_rows(3, 20011, seed=32), peaked_logits(9, 777, seed=33)]  # shrink, grow
    mixed = peaked_logits(10, 20011, seed=34)
    mixed[::3] = flat_rows(4, 20011, seed=35)  # some rows of a chunk go to the histogram
    calls.append(mixed)
    for logits in calls:
        fresh = token_features(logits, 0.9, chunk_size=8)
        reused = token_features(logits, 0.9, chunk_size=8, workspace=space)
        for a, b in zip(fresh.tensors(), reused.tensors(), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(token_entropy(logits, workspace=space), token_entropy(logits))
