"""The optimisation batch of one update: the rows it trains on, cut into micro-batches, and
everything that must be the whole batch's, computed once before the first epoch.

Gradients accumulate one micro-batch at a time, but every normaliser and threshold belongs
to the whole batch, so that the micro-batches' losses and gradients add up to the whole
batch's (docs/method.md, docs/metrics.md):

  - the aggregation's normalisers: valid tokens, sequences with a valid token, max_len;
  - the 80/20 entropy threshold, a quantile over every valid token;
  - PAEC's mask quantile, H_bar and floor (`paec.calibration.penalty.PAECBatch`);
  - the pre-update and reference log-probs, when several epochs, a KL term or EntroPIC need
    them, and ERC's pre-update entropies;
  - EntroPIC's normalisers: the high-probability tokens under the pre-update policy.

Per-token statistics are kept flat, (n_valid,) in the row-major order of `mask`, the order
in which `paec.calibration.scores.token_scores` returns its entropies: a micro-batch's rows
r0:r1 own the flat slice offsets[r0]:offsets[r1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.features import TokenFeatures
from paec.calibration.kernels import quantile_threshold
from paec.calibration.penalty import PAECBatch
from paec.config.loss import PolicyLossType
from paec.config.training import TrainConfig
from paec.training.distributed import World
from paec.training.entropy_losses import high_prob_counts
from paec.training.rollout import RolloutBatch

OldLogProbs = Callable[[RolloutBatch], Sequence[Tensor | None]]
"""Log-probs of a sub-batch's sampled tokens, (b, T) each, under the pre-update policy and,
with a KL term, the reference (else None), optionally followed by the pre-update policy's
full entropy (b, T) (ERC; else None or absent); called without autograd."""


@dataclass(frozen=True)
class MicroBatch:
    """Rows `rows` of the optimisation batch; their valid tokens are `tokens` of its flat
    (n_valid,) order."""

    rows: slice  # r0:r1
    tokens: slice  # offsets[r0]:offsets[r1]
    share: float  # its valid tokens / the batch's: the weight of its per-token-mean metrics


def micro_batches(row_tokens: list[int], size: int) -> tuple[list[MicroBatch], list[int]]:
    """Micro-batches of `size` rows over rows with `row_tokens` valid tokens each, and the
    flat index of each row's first valid token (B + 1 offsets, the last one n_valid)."""
    offsets = [0]
    for n in row_tokens:
        offsets.append(offsets[-1] + n)
    total = float(offsets[-1])
    micro = []
    for r0 in range(0, len(row_tokens), size):
        r1 = min(r0 + size, len(row_tokens))
        share = float(offsets[r1] - offsets[r0]) / max(total, 1.0)
        micro.append(MicroBatch(slice(r0, r1), slice(offsets[r0], offsets[r1]), share))
    return micro, offsets


@dataclass(frozen=True)
class OptimBatch:
    """One update's batch: B rows of completions (T positions), n_valid valid tokens."""

    roll: RolloutBatch  # the B rows the update trains on
    ids: Tensor  # (B, T) sampled tokens
    mask: Tensor  # (B, T) bool, valid tokens
    advantages: Tensor  # (B,)
    micro: list[MicroBatch]
    offsets: list[int]  # B + 1: flat index of each row's first valid token
    total_tokens: float  # n_valid, the token-mean normaliser
    total_seqs: float  # rows with a valid token, the sequence-mean normaliser
    max_len: int  # the generation budget, Dr. GRPO's normaliser
    entropies: Tensor  # (n_valid,) full entropy H the sampler saw, detached
    features: TokenFeatures | None  # (n_valid,) fields, PAEC's features (PAEC on)
    paec: PAECBatch | None  # PAEC's mask, H_bar and floor (PAEC on)
    entropy_threshold: Tensor | None  # () the 80/20 threshold (high_entropy_quantile set)
    old_logp: Tensor | None  # (B, T) pre-update log-probs; None: the update's own, detached
    ref_logp: Tensor | None  # (B, T) reference log-probs (KL term)
    generator: torch.Generator  # the update's random draws (Clip-Cov), seeded per step
    old_entropy: Tensor | None = None  # (B, T) pre-update full entropy from the no-grad pass
    high_prob_tokens: float | None = None  # EntroPIC: valid tokens with pi_old(y) > p_hi
    high_prob_seqs: float | None = None  # EntroPIC: rows with at least one of them
    is_weights: Tensor | None = None  # (B, T) truncated importance weights (vllm), detached

    @staticmethod
    def build(roll: RolloutBatch, advantages: Tensor, entropy_bt: Tensor,
              features_bt: TokenFeatures | None, *, cfg: TrainConfig, anchor: AnchorState,
              device: torch.device, seed: int, old_pass: OldLogProbs | None,
              old_logp: Tensor | None = None, is_weights: Tensor | None = None,
              world: World | None = None, lockstep: bool = False) -> OptimBatch:
        """The batch of `roll`'s rows with their `advantages` (B,), from the statistics the
        sampler saw at each position: `entropy_bt` (B, T) and, with PAEC, `features_bt`
        ((B, T) fields). `old_pass` (None: not needed) fills the old and reference
        log-probs, else `old_logp` (B, T) when a scoring pass already gave them (None: the
        update's own, detached); `is_weights` (B, T): the engine's importance weights;
        `seed` seeds the update's generator. With several processes (`world`) each runs the
        old pass of the micro-batches it owns and the results are summed; `lockstep`
        (sharded parameters) makes every rank run as many passes."""
        world = world or World()
        mask = roll.completion_mask.to(device)  # (B, T)
        ids = roll.completion_ids.to(device)  # (B, T)
        row_tokens = mask.sum(-1)  # (B,)
        micro, offsets = micro_batches(row_tokens.tolist(), cfg.micro_batch_size)
        entropies = entropy_bt[mask]  # (n_valid,) batch order, as token_scores returns
        features = None if features_bt is None else features_bt.select(mask)  # (n_valid,)
        ref_logp, old_entropy = None, None
        if old_pass is not None:
            old_logp, ref_logp, old_entropy = _old_log_probs(roll, mask, micro, old_pass,
                                                             device, world, lockstep)
        paec = None if features is None else PAECBatch.build(features, anchor, cfg.paec)
        threshold = None
        if cfg.loss.high_entropy_quantile is not None:
            # 80/20: one entropy threshold for the whole batch, not one per micro-batch.
            every = torch.ones_like(entropies, dtype=torch.bool)  # (n_valid,)
            threshold = quantile_threshold(entropies, every, cfg.loss.high_entropy_quantile)
        return OptimBatch(
            roll, ids, mask, advantages, micro, offsets, total_tokens=float(row_tokens.sum()),
            total_seqs=float((row_tokens > 0).sum()), max_len=cfg.max_new_tokens,
            entropies=entropies, features=features, paec=paec, entropy_threshold=threshold,
            old_logp=old_logp, ref_logp=ref_logp,
            generator=torch.Generator(device).manual_seed(seed), old_entropy=old_entropy,
            is_weights=is_weights, **_high_prob_normalisers(cfg, old_logp, mask))

    def nucleus(self, mb: MicroBatch) -> TokenFeatures | None:
        """The micro-batch's features (n,) for PAEC's differentiable H^p, only when the PAEC
        term has a gradient this step (below the floor, or with a bonus); otherwise the term
        is exactly 0 and costs nothing."""
        if self.paec is None or self.features is None or not self.paec.needs_gradient:
            return None
        return self.features.select(mb.tokens)

    def feature_metrics(self) -> dict[str, float]:
        """The batch's per-token statistics (`entropy`, and with PAEC `entropy/*`, `paec/*`),
        as in docs/metrics.md."""
        if self.paec is not None:
            return self.paec.metrics()
        out = {"entropy": float(self.entropies.mean())}
        if self.features is not None:
            out["entropy/top_p"] = float(self.features.top_p_entropy.mean())
        return out


def _old_log_probs(roll: RolloutBatch, mask: Tensor, micro: list[MicroBatch],
                   old_pass: OldLogProbs, device: torch.device, world: World,
                   lockstep: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(B, T) old log-probs and, when `old_pass` gives them, (B, T) reference log-probs and
    (B, T) old entropies, micro-batch by micro-batch, without autograd: each process the
    micro-batches it owns, zeros elsewhere, then summed over processes (`lockstep`: a
    process that owns fewer makes passes whose results it drops)."""
    out: list[Tensor | None] = [None, None, None]
    mine = [mb for i, mb in enumerate(micro) if world.owns(i)]
    # Every process makes at least one pass (one that owns nothing drops its result), so
    # each knows which results the pass gives; with `lockstep` all make as many.
    passes = world.rounds(len(micro)) if lockstep else max(len(mine), 1)
    with torch.no_grad():
        for k in range(passes):
            mb = mine[k] if k < len(mine) else micro[0]
            part = old_pass(roll.select(mb.rows))  # (b, T), (b, T) or None[, (b, T) or None]
            assert part[0] is not None  # the old log-probs are always given
            for j, x in enumerate(part):
                if x is None:
                    continue
                if out[j] is None:
                    out[j] = torch.zeros(mask.shape, dtype=x.dtype, device=device)  # (B, T)
                if k < len(mine):
                    out[j][mb.rows] = x  # type: ignore[index]
    full = [None if x is None else world.sum_(x) for x in out]
    logp = full[0]
    assert logp is not None
    return logp, full[1], full[2]  # (B, T), (B, T) or None, (B, T) or None


def _high_prob_normalisers(cfg: TrainConfig, old_logp: Tensor | None,
                           mask: Tensor) -> dict[str, float]:
    """EntroPIC: the whole batch's count of K's tokens and rows under the pre-update policy,
    the normalisers of its extra term (K under pi_theta is the same set in the first epoch,
    when pi_theta is pi_old); empty for the other losses."""
    if cfg.loss.loss_type is not PolicyLossType.ENTROPIC or old_logp is None:
        return {}
    tokens, seqs = high_prob_counts(old_logp, mask, cfg.loss.entropic_high_prob)
    return {"high_prob_tokens": tokens, "high_prob_seqs": seqs}


def accumulate(sums: dict[str, float], metrics: Mapping[str, Tensor | float], share: float,
               epochs: int) -> None:
    """Add one micro-batch's metrics to the update's `sums`. Loss terms carry whole-batch
    normalisers, so their micro-batch values add up; the other metrics are means over the
    micro-batch's tokens, weighted by its `share` of the batch's. Both are averaged over
    the `epochs`."""
    for k, v in metrics.items():
        w = 1.0 if k.startswith("loss/") else share
        sums[k] = sums.get(k, 0.0) + w * float(v) / epochs
