"""paec.training.batch: the optimisation batch's micro-batches cover its valid tokens exactly
once, in the flat order the update's scores use, and its normalisers and thresholds are the
whole batch's, whatever the micro-batch size."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.features import TokenFeatures, token_features
from paec.calibration.kernels import quantile_threshold
from paec.config.calibration import PAECConfig
from paec.config.loss import PolicyLossConfig
from paec.config.training import TrainConfig
from paec.training.batch import OptimBatch, micro_batches
from paec.training.rollout import RolloutBatch, completion_mask

EOS = 7
B, T, PROMPT = 7, 9, 3


def rollout(seed: int = 0) -> RolloutBatch:
    """B rows with EOS at different places, one of them without a valid token."""
    g = torch.Generator().manual_seed(seed)
    completions = torch.randint(8, 50, (B, T), generator=g)  # (B, T) no EOS yet
    for row, at in enumerate([0, 3, 8, 5, 1, 6]):  # row 6: no EOS, all T tokens valid
        completions[row, at] = EOS
    mask = completion_mask(completions, EOS)  # (B, T)
    mask[4] = False  # a row with no valid token: it counts for no sequence
    prompts = torch.randint(8, 50, (B, PROMPT), generator=g)  # (B, L_p)
    ids = torch.cat([prompts, completions], dim=1)  # (B, L_p + T)
    attention = torch.cat([torch.ones(B, PROMPT, dtype=torch.long), mask.long()], dim=1)
    return RolloutBatch(ids, attention, PROMPT, mask)


def features_bt(seed: int = 1) -> TokenFeatures:
    """PAEC's features of B x T positions from random logits, (B, T) fields."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B * T, 31, generator=g) * 2.0  # (B * T, V)
    flat = token_features(logits, 0.9)  # (B * T,) fields
    return TokenFeatures(*(x.reshape(B, T) for x in flat.tensors()))


def build(micro_batch_size: int, *, features: TokenFeatures | None = None,
          anchor: AnchorState | None = None, **kw: Any) -> OptimBatch:
    """The batch of `rollout()` with random entropies, the 80/20 threshold on."""
    cfg = TrainConfig(micro_batch_size=micro_batch_size, max_new_tokens=T, device="cpu",
                      loss=PolicyLossConfig(high_entropy_quantile=0.8), **kw)
    entropy = torch.rand(B, T, generator=torch.Generator().manual_seed(2))  # (B, T)
    anchor = anchor or AnchorState(cfg.paec.anchor_steps, cfg.paec.floor_ratio)
    return OptimBatch.build(rollout(), torch.linspace(-1.0, 1.0, B), entropy, features,
                            cfg=cfg, anchor=anchor, device=torch.device("cpu"), seed=0,
                            old_pass=None)


def test_offsets_count_each_rows_tokens() -> None:
    micro, offsets = micro_batches([3, 0, 5, 2], size=3)
    assert offsets == [0, 3, 3, 8, 10]
    assert [(mb.rows, mb.tokens) for mb in micro] == [(slice(0, 3), slice(0, 8)),
                                                      (slice(3, 4), slice(8, 10))]
    assert [mb.share for mb in micro] == [0.8, 0.2]


@pytest.mark.parametrize("size", [1, 2, 3, B, 100])
def test_micro_batches_cover_every_row_and_valid_token_exactly_once(size: int) -> None:
    batch = build(size)
    n_valid = int(batch.mask.sum())
    rows = torch.cat([torch.arange(B)[mb.rows] for mb in batch.micro])  # (B,)
    tokens = torch.cat([torch.arange(n_valid)[mb.tokens] for mb in batch.micro])  # (n_valid,)
    assert rows.tolist() == list(range(B))
    assert tokens.tolist() == list(range(n_valid))
    assert all(mb.rows.stop - mb.rows.start <= size for mb in batch.micro)
    assert sum(mb.share for mb in batch.micro) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("size", [1, 3, B])
def test_a_micro_batchs_token_slice_is_its_rows_valid_tokens_in_score_order(size: int) -> None:
    """The flat statistics of a micro-batch's slice are those of its rows' valid positions,
    row-major: the order of `token_scores` on those rows."""
    entropy = torch.rand(B, T, generator=torch.Generator().manual_seed(2))  # (B, T)
    batch = build(size)
    for mb in batch.micro:
        rows_mask = batch.mask[mb.rows]  # (b, T)
        assert torch.equal(batch.entropies[mb.tokens], entropy[mb.rows][rows_mask])
        assert mb.share == int(rows_mask.sum()) / int(batch.mask.sum())


@pytest.mark.parametrize("size", [1, 2, B])
def test_normalisers_and_threshold_are_the_whole_batchs(size: int) -> None:
    batch = build(size)
    mask = rollout().completion_mask  # (B, T)
    entropy = torch.rand(B, T, generator=torch.Generator().manual_seed(2))  # (B, T)
    assert batch.total_tokens == float(mask.sum())
    assert batch.total_seqs == float(B - 1)  # row 4 has no valid token
    assert batch.max_len == T
    assert batch.entropy_threshold is not None
    assert float(batch.entropy_threshold) == float(quantile_threshold(entropy, mask, 0.8))


def test_old_and_reference_log_probs_are_assembled_row_by_row() -> None:
    """`old_pass` runs once per micro-batch, without autograd, on that micro-batch's rows."""
    seen: list[int] = []

    def old_pass(sub: RolloutBatch) -> tuple[Tensor, Tensor | None]:
        assert not torch.is_grad_enabled()
        seen.append(sub.input_ids.shape[0])
        first = sub.input_ids[:, :1].float()  # (b, 1) identifies the rows
        return first.expand(-1, T) + 0.5, -first.expand(-1, T)  # (b, T), (b, T)

    cfg = TrainConfig(micro_batch_size=3, max_new_tokens=T, device="cpu")
    roll = rollout()
    batch = OptimBatch.build(roll, torch.zeros(B), torch.zeros(B, T), None, cfg=cfg,
                             anchor=AnchorState(4, 0.8), device=torch.device("cpu"), seed=0,
                             old_pass=old_pass)
    expected = roll.input_ids[:, :1].float().expand(-1, T)  # (B, T)
    assert seen == [3, 3, 1]
    assert batch.old_logp is not None and batch.ref_logp is not None
    assert torch.equal(batch.old_logp, expected + 0.5)
    assert torch.equal(batch.ref_logp, -expected)
    assert batch.entropy_threshold is None  # no 80/20


def test_paec_needs_no_nucleus_while_its_term_has_no_gradient() -> None:
    """While the anchor warms up the PAEC term is 0: no micro-batch asks for H^p."""
    batch = build(3, features=features_bt(), paec=PAECConfig(anchor_steps=4))
    assert batch.paec is not None and batch.features is not None
    assert len(batch.paec.features) == int(batch.mask.sum())
    assert not batch.paec.needs_gradient
    assert all(batch.nucleus(mb) is None for mb in batch.micro)
    assert "entropy/masked" in batch.feature_metrics()


def test_paec_micro_batches_get_their_own_nucleus_below_the_floor() -> None:
    frozen = AnchorState(1, 0.8, steps_seen=1, total=0.0, anchor=50.0)  # far below the floor
    batch = build(3, features=features_bt(), anchor=frozen)
    assert batch.paec is not None and batch.paec.needs_gradient and batch.features is not None
    for mb in batch.micro:
        nucleus = batch.nucleus(mb)
        assert nucleus is not None
        assert torch.equal(nucleus.nucleus_size, batch.features.nucleus_size[mb.tokens])
