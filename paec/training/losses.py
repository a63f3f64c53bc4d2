"""Policy-gradient losses of the baselines PAEC is compared against, as pure tensor functions.

    r_t = exp(logp_t - old_logp_t)                                   importance ratio
    GRPO      l_t = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))    clip-higher (DAPO)
    CISPO     l_t = -sg(min(r, 1 + eps_high)) A logp_t                  (MiniMax-M1)
    Clip-Cov  GRPO, with the loss of a random few tokens with Cov_t in (lb, ub) set to 0
    KL-Cov    -A r, plus coef |logp - old_logp| on the top few tokens by Cov_t
    Cov_t = (A_t - mean A) (logp_t - mean logp)   means over valid tokens (arXiv 2505.22617)
    CE-GPPO, ERC, EntroPIC and AEnt's clamped entropy: `paec.training.entropy_losses`

Inputs are (B, T): `logp` (with grad), `old_logp`, `mask` (valid response tokens, nonzero =
valid), `advantages` (B,) or (B, T). Per-token losses are 0 at padding. `aggregate` turns them
into a scalar so that summing it over micro-batches, given the whole batch's normalisers,
equals the full-batch value. `policy_loss` composes the selected loss, the 80/20 entropy mask,
the k3 KL to a reference model and the entropy bonus. Metrics are detached 0-dim tensors.
No I/O, no trainer state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from paec.calibration.kernels import quantile_threshold
from paec.config.checks import parse_enum
from paec.config.loss import LossAggregation, PolicyLossConfig, PolicyLossType
from paec.training.entropy_losses import (
    BaselineInputs,
    ce_gppo_token_loss,
    clamped_entropy_metrics,
    entropic_extra_term,
    entropic_token_loss,
    erc_token_loss,
)
from paec.training.tokens import masked_mean, token_advantages, valid_mask

Metrics = dict[str, Tensor]


# ----------------------------------------------------------------------------- helpers


def _log_ratio(logp: Tensor, old_logp: Tensor, valid: Tensor) -> Tensor:
    # Padding may hold garbage log-probs: exp() of it can be inf, and inf * 0 is NaN in both the
    # forward and the backward pass. Zero the log-ratio there (ratio 1, no gradient) instead.
    return torch.where(valid, logp - old_logp.detach(), 0.0)  # (B, T)


def _clip_metrics(ratio: Tensor, low: Tensor, high: Tensor, valid: Tensor) -> Metrics:
    return {
        "policy/clip_frac_low": masked_mean(low.to(ratio.dtype), valid),  # ()
        "policy/clip_frac_high": masked_mean(high.to(ratio.dtype), valid),  # ()
        "policy/ratio_mean": masked_mean(ratio, valid),  # ()
    }


def _token_covariance(logp: Tensor, adv: Tensor, valid: Tensor) -> Tensor:
    """Cov_t = (A_t - mean A)(logp_t - mean logp), means over valid tokens, logp detached
    (verl compute_policy_loss_clip_cov / _kl_cov; PRIME-RL Entropy-Mechanism #9)."""
    lp = logp.detach()  # (B, T)
    cov = (adv - masked_mean(adv, valid)) * (lp - masked_mean(lp, valid))  # (B, T)
    return torch.where(valid, cov, -math.inf)  # (B, T) -inf at padding: never selected


def _selected_metrics(selected: Tensor, valid: Tensor, dtype: torch.dtype) -> Metrics:
    return {
        "policy/cov_selected": selected.sum().detach().to(dtype),  # ()
        "policy/cov_selected_frac": masked_mean(selected.to(dtype), valid),  # ()
    }


def _num_selected(ratio: float, valid: Tensor) -> int:
    # max(1, int(ratio * N_valid)) as in verl; 0 when nothing is valid. One host sync.
    n_valid = int(valid.sum().item())
    return max(1, int(ratio * n_valid)) if n_valid > 0 else 0


# ----------------------------------------------------------------------------- per-token losses


def _ppo_clip(
    logp: Tensor, old_logp: Tensor, adv: Tensor, valid: Tensor, clip_low: float, clip_high: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, clipped-branch-active, ratio), each (B, T); the loss is not yet zeroed at padding."""
    ratio = torch.exp(_log_ratio(logp, old_logp, valid))  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    # The clipped branch is active (no gradient) where it is strictly larger: r > 1 + eps_high
    # with A > 0, or r < 1 - eps_low with A < 0 (verl: clip_by_origin = pg_losses2 > pg_losses1).
    active = (clipped > unclipped) & valid  # (B, T)
    return torch.maximum(unclipped, clipped), active, ratio  # (B, T) x 3


def grpo_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    clip_low: float = 0.2, clip_high: float = 0.28,
) -> tuple[Tensor, Metrics]:
    """PPO clipped surrogate with clip-higher bounds [1 - clip_low, 1 + clip_high] (DAPO,
    arXiv 2503.14476): max(-A r, -A clip(r)). Returns (per-token loss (B, T), 0 at padding;
    metrics). No dual clip."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    loss, active, ratio = _ppo_clip(logp, old_logp, adv, valid, clip_low, clip_high)  # (B, T)
    metrics = _clip_metrics(ratio, active & (adv < 0), active & (adv > 0), valid)
    return torch.where(valid, loss, 0.0), metrics  # (B, T)


def cispo_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, clip_high: float = 0.28,
) -> tuple[Tensor, Metrics]:
    """CISPO (MiniMax-M1): -sg(min(r, 1 + clip_high)) * A * logp per token. Every token keeps a
    gradient; the IS weight is only truncated. clip_frac_high counts truncated weights whatever
    the sign of A; there is no lower bound, so clip_frac_low is 0."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    ratio = torch.exp(_log_ratio(logp, old_logp, valid))  # (B, T)
    weight = ratio.clamp(max=1.0 + clip_high).detach()  # (B, T)
    loss = -weight * adv * logp  # (B, T)
    high = (ratio > 1.0 + clip_high) & valid  # (B, T)
    metrics = _clip_metrics(ratio, torch.zeros_like(high), high, valid)
    return torch.where(valid, loss, 0.0), metrics  # (B, T)


def clip_cov_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    clip_low: float = 0.2, clip_high: float = 0.28, cov_ratio: float = 2e-4, cov_lb: float = 1.0,
    cov_ub: float = 5.0, generator: torch.Generator | None = None,
) -> tuple[Tensor, Metrics]:
    """Clip-Cov, as verl `compute_policy_loss_clip_cov`: the GRPO loss, except that among the
    valid tokens not already PPO-clipped whose Cov_t is in (cov_lb, cov_ub), a uniformly random
    min(n_eligible, max(1, int(cov_ratio * N_valid))) get loss 0, hence no gradient.
    `generator` (on the inputs' device) makes the draw reproducible. Selection is over this
    call's tokens (verl: per micro-batch, per GPU)."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    loss, active, ratio = _ppo_clip(logp, old_logp, adv, valid, clip_low, clip_high)  # (B, T)
    cov = _token_covariance(logp, adv, valid)  # (B, T)
    eligible = (cov > cov_lb) & (cov < cov_ub) & valid & ~active  # (B, T)
    # A uniform random subset of the eligible tokens: the top-k of iid uniform scores, ineligible
    # tokens scored -1 so that they lose to every eligible one. Unlike verl's nonzero + randperm,
    # this stays on the device and needs no count of the eligible set.
    k = _num_selected(cov_ratio, valid)
    selected = torch.zeros_like(eligible).flatten()  # (B*T,)
    if k > 0:
        scores = torch.rand(eligible.shape, generator=generator, device=logp.device)  # (B, T)
        scores = torch.where(eligible, scores, -1.0).flatten()  # (B*T,)
        top = scores.topk(k)  # (k,), (k,)
        selected = selected.scatter(0, top.indices, top.values >= 0)  # (B*T,)
    selected = selected.view_as(eligible)  # (B, T)
    # verl: pg_losses * corr with corr = 0 on the selected tokens; where() also zeroes padding.
    loss = torch.where(selected | ~valid, 0.0, loss)  # (B, T)
    metrics = _clip_metrics(ratio, active & (adv < 0), active & (adv > 0), valid)
    metrics.update(_selected_metrics(selected, valid, loss.dtype))
    return loss, metrics


def kl_cov_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    cov_ratio: float = 2e-4, coef: float = 1.0,
) -> tuple[Tensor, Metrics]:
    """KL-Cov, as verl `compute_policy_loss_kl_cov`: the unclipped -A r everywhere, and
    -A r + coef |logp - old_logp| on the top max(1, int(cov_ratio * N_valid)) valid tokens by
    Cov_t. On-policy (logp == old_logp) it equals -A r (PRIME-RL Entropy-Mechanism #1).
    Selection is over this call's tokens; unlike verl, the top-k runs on the inputs' device,
    not the CPU. Nothing is clipped, so the clip fractions are 0."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    log_ratio = _log_ratio(logp, old_logp, valid)  # (B, T)
    ratio_t = torch.exp(log_ratio)  # (B, T)
    loss = -adv * ratio_t  # (B, T)
    cov = _token_covariance(logp, adv, valid).flatten()  # (B*T,)
    k = _num_selected(cov_ratio, valid)
    selected = torch.zeros_like(valid).flatten()  # (B*T,)
    if k > 0:
        # -inf padding covariances lose to every valid token, and k <= N_valid.
        selected[cov.topk(k).indices] = True  # (B*T,)
    selected = selected.view_as(valid)  # (B, T)
    loss = torch.where(selected, loss + coef * log_ratio.abs(), loss)  # (B, T)
    none = torch.zeros_like(valid)  # (B, T)
    metrics = _clip_metrics(ratio_t, none, none, valid)
    metrics.update(_selected_metrics(selected, valid, loss.dtype))
    return torch.where(valid, loss, 0.0), metrics  # (B, T)


def policy_token_loss(
    loss_type: PolicyLossType | str, logp: Tensor, old_logp: Tensor, advantages: Tensor,
    mask: Tensor, cfg: PolicyLossConfig, generator: torch.Generator | None = None,
    extra: BaselineInputs | None = None,
) -> tuple[Tensor, Metrics]:
    """Dispatch to the per-token loss of `loss_type` with `cfg`'s hyperparameters: (B, T).
    ERC needs `extra`'s entropies; EntroPIC's per-token loss here is its dual-clip part (its
    extra term is `policy_loss`'s); AEnt's is GRPO's (its bonus is `policy_loss`'s)."""
    kind = parse_enum(PolicyLossType, loss_type, "loss_type")
    clips = {"clip_low": cfg.clip_low, "clip_high": cfg.clip_high}
    if kind is PolicyLossType.CE_GPPO:
        return ce_gppo_token_loss(logp, old_logp, advantages, mask, **clips,
                                  beta1=cfg.ce_gppo_beta1, beta2=cfg.ce_gppo_beta2,
                                  dual_clip=cfg.dual_clip)
    if kind is PolicyLossType.ERC:
        if extra is None or extra.entropy is None or extra.old_entropy is None:
            raise ValueError("loss_type erc: pass extra.entropy and extra.old_entropy")
        return erc_token_loss(logp, old_logp, advantages, mask, extra.entropy,
                              extra.old_entropy, **clips, dual_clip=cfg.dual_clip,
                              low=cfg.erc_low, high=cfg.erc_high)
    if kind is PolicyLossType.ENTROPIC:
        return entropic_token_loss(logp, old_logp, advantages, mask, **clips,
                                   dual_clip=cfg.dual_clip)
    if kind in (PolicyLossType.GRPO, PolicyLossType.AENT):
        return grpo_token_loss(logp, old_logp, advantages, mask, clip_low=cfg.clip_low,
                               clip_high=cfg.clip_high)
    if kind is PolicyLossType.CISPO:
        return cispo_token_loss(logp, old_logp, advantages, mask, clip_high=cfg.clip_high)
    if kind is PolicyLossType.CLIP_COV:
        return clip_cov_token_loss(logp, old_logp, advantages, mask, clip_low=cfg.clip_low,
                                   clip_high=cfg.clip_high, cov_ratio=cfg.clip_cov_ratio,
                                   cov_lb=cfg.clip_cov_lb, cov_ub=cfg.clip_cov_ub,
                                   generator=generator)
    return kl_cov_token_loss(logp, old_logp, advantages, mask, cov_ratio=cfg.kl_cov_ratio,
                             coef=cfg.kl_cov_coef)


# ----------------------------------------------------------------------------- pieces


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 with d = ref_logp - logp
    (Schulman, "Approximating KL divergence"): unbiased, always >= 0. (B, T)."""
    d = ref_logp.detach() - logp  # (B, T)
    return torch.exp(d) - d - 1.0  # (B, T)


def aggregate(
    per_token: Tensor, mask: Tensor, mode: LossAggregation | str, *, max_len: int | None = None,
    total_tokens: float | None = None, total_seqs: float | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the valid tokens of `mask`.

    total_tokens / total_seqs are the normalisers of the WHOLE optimisation batch: pass them
    when the batch is split into micro-batches, and the sum of the micro-batch values equals
    the full-batch value, gradients included (verl `agg_loss(..., batch_num_tokens,
    global_batch_size)`). Defaults are this call's counts. Sequences with no valid token add
    nothing; the local default of total_seqs counts only sequences with at least one valid
    token, so a caller passing total_seqs must count the same way to match the full batch.
    max_len (SEQ_MEAN_TOKEN_SUM_NORM, Dr. GRPO) defaults to T: pass the generation budget, a
    constant, when micro-batches are padded to different lengths.
    """
    kind = parse_enum(LossAggregation, mode, "aggregation mode")
    valid = valid_mask(mask, per_token)  # (B, T)
    # where(), not a product: padding may hold inf/NaN and NaN * 0 is NaN.
    masked = torch.where(valid, per_token, 0.0)  # (B, T)
    if kind is LossAggregation.TOKEN_MEAN:
        if total_tokens is None:
            return masked.sum() / valid.sum().clamp_min(1).to(per_token.dtype)  # ()
        return masked.sum() / _positive(total_tokens, "total_tokens")  # ()
    seq_tokens = valid.sum(-1)  # (B,)
    if kind is LossAggregation.SEQ_MEAN_TOKEN_MEAN:
        seq_loss = masked.sum(-1) / seq_tokens.clamp_min(1).to(per_token.dtype)  # (B,)
    else:
        length = per_token.shape[-1] if max_len is None else max_len
        seq_loss = masked.sum(-1) / _positive(length, "max_len")  # (B,)
    if total_seqs is None:
        return seq_loss.sum() / (seq_tokens > 0).sum().clamp_min(1).to(per_token.dtype)  # ()
    return seq_loss.sum() / _positive(total_seqs, "total_seqs")  # ()


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def high_entropy_token_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """80/20 (arXiv 2506.01939): valid tokens with entropy >= the `quantile`-quantile of the
    valid tokens' entropies; padding is excluded from the threshold (TRL #3709). Global over the
    given batch: call it on the whole optimisation batch, not per micro-batch (TRL #3833).
    All False when nothing is valid. (B, T) bool, detached."""
    entropy = entropy.detach()  # (B, T)
    valid = valid_mask(mask, entropy)  # (B, T)
    if not bool(valid.any()):
        return valid  # (B, T) all False
    threshold = quantile_threshold(entropy, valid, quantile)  # ()
    return (entropy >= threshold) & valid  # (B, T)


# ----------------------------------------------------------------------------- composition


def _high_entropy_tokens(entropy: Tensor | None, threshold: Tensor | float | None,
                         valid: Tensor) -> Tensor:
    """80/20: the valid tokens whose detached `entropy` (B, T) reaches the whole batch's
    `threshold`, (B, T) bool; refuses to run without either."""
    if entropy is None:
        raise ValueError("high_entropy_quantile is set: pass `entropy`")
    if threshold is None:
        raise ValueError(
            "high_entropy_quantile is set: pass `entropy_threshold`, the quantile of the "
            "whole optimisation batch (quantile_threshold over every micro-batch's tokens)")
    return (entropy.detach() >= threshold) & valid  # (B, T)


def _kl_term(logp: Tensor, ref_logp: Tensor | None, valid: Tensor,
             agg: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """agg(k3_t) against the reference's log-probs (B, T), and k3's token mean (detached)."""
    if ref_logp is None:
        raise ValueError("kl_coef > 0: pass `ref_logp`")
    # Padding may hold garbage (even -inf): give k3 zeros there (KL 0, no gradient, no NaN).
    kl = kl_k3(torch.where(valid, logp, 0.0), torch.where(valid, ref_logp, 0.0))  # (B, T)
    return agg(kl), masked_mean(kl, valid)


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, cfg: PolicyLossConfig, *,
    entropy: Tensor | None = None, ref_logp: Tensor | None = None, max_len: int | None = None,
    total_tokens: float | None = None, total_seqs: float | None = None,
    generator: torch.Generator | None = None, entropy_threshold: Tensor | float | None = None,
    extra: BaselineInputs | None = None, is_weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """The scalar loss of one (micro-)batch and its metrics:

        agg(m_t * l_t) + kl_coef * agg(k3_t) - entropy_coef * agg(H_t)

    l_t: the per-token loss of cfg.loss_type; m_t: the 80/20 mask when
    cfg.high_entropy_quantile is set (from `entropy`, detached; it multiplies the policy term
    only and leaves the normaliser unchanged, as TRL does); agg: `aggregate` with cfg.aggregation
    and the given whole-batch normalisers. The entropy bonus covers all valid tokens (TRL
    restricts it to the 80/20 tokens). With cfg.high_entropy_quantile set, `entropy_threshold`
    is required: the quantile over the whole optimisation batch, computed once with
    `quantile_threshold`, so that micro-batches share it. There is no per-call fallback: a
    quantile of each micro-batch's own tokens silently changes which tokens train (TRL #3833).
    ERC, EntroPIC and AEnt take their other inputs from `extra`; EntroPIC and AEnt add a
    term (`baseline_term`). `is_weights` (B, T): an engine's detached truncated importance
    weights (`paec.training.engines`); they multiply l_t, the policy term only (verl, TRL).
    """
    valid = valid_mask(mask, logp)  # (B, T)
    per_token, metrics = policy_token_loss(cfg.loss_type, logp, old_logp, advantages, mask, cfg,
                                           generator, extra)  # (B, T)
    if is_weights is not None:
        per_token = per_token * is_weights.to(per_token.dtype)  # (B, T)
    if cfg.high_entropy_quantile is not None:
        keep = _high_entropy_tokens(entropy, entropy_threshold, valid)  # (B, T)
        per_token = per_token * keep.to(per_token.dtype)  # (B, T)
        metrics["policy/high_entropy_frac"] = masked_mean(keep.to(per_token.dtype), valid)

    def agg(x: Tensor) -> Tensor:
        return aggregate(x, mask, cfg.aggregation, max_len=max_len, total_tokens=total_tokens,
                         total_seqs=total_seqs)  # ()

    pg = agg(per_token)  # ()
    metrics["loss/policy"] = pg.detach()
    total, term_metrics = baseline_term(logp, old_logp, advantages, mask, cfg, extra, agg,
                                        max_len=max_len)  # ()
    total = pg + total  # ()
    metrics |= term_metrics
    if cfg.kl_coef > 0:
        kl_term, metrics["policy/kl"] = _kl_term(logp, ref_logp, valid, agg)  # (), ()
        kl_term = cfg.kl_coef * kl_term  # ()
        total = total + kl_term  # ()
        metrics["loss/kl"] = kl_term.detach()
    if entropy is not None:
        metrics["policy/entropy"] = masked_mean(entropy, valid)
    if cfg.entropy_coef > 0:
        # TRL PR #5596 shipped a bonus computed under no_grad, so it did nothing: refuse that.
        if entropy is None or (logp.requires_grad and not entropy.requires_grad):
            raise ValueError("entropy_coef > 0 needs `entropy` computed with grad")
        bonus = cfg.entropy_coef * agg(entropy)  # ()
        total = total - bonus  # ()
        metrics["loss/entropy_bonus"] = bonus.detach()
    metrics["loss/total"] = total.detach()
    return total, metrics


def baseline_term(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, cfg: PolicyLossConfig,
    extra: BaselineInputs | None, agg: Callable[[Tensor], Tensor], *, max_len: int | None = None,
) -> tuple[Tensor, Metrics]:
    """The scalar a baseline adds beside its aggregated per-token loss (0 for the others):

        EntroPIC  alpha * agg_K(-r |A|)   over K only: its whole-batch normalisers are
                  extra.high_prob_tokens / high_prob_seqs (this call's counts when None)
        AEnt      -aent_coef * agg(Hc_t)  `agg` as the policy term's

    `agg` aggregates a (B, T) per-token value over `mask` with the whole-batch normalisers."""
    kind = parse_enum(PolicyLossType, cfg.loss_type, "loss_type")
    zero = logp.new_zeros(())  # ()
    if kind is PolicyLossType.ENTROPIC:
        if extra is None or extra.control_alpha is None:
            raise ValueError("loss_type entropic: pass extra.control_alpha")
        per_token, in_k, metrics = entropic_extra_term(
            logp, old_logp, advantages, mask, high_prob=cfg.entropic_high_prob)  # (B, T) x 2
        tokens, seqs = extra.high_prob_tokens, extra.high_prob_seqs
        term = extra.control_alpha * aggregate(
            per_token, in_k, cfg.aggregation, max_len=max_len,
            total_tokens=None if tokens is None else max(tokens, 1.0),
            total_seqs=None if seqs is None else max(seqs, 1.0))  # ()
        return term, metrics | {"loss/entropic": term.detach()}
    if kind is PolicyLossType.AENT:
        if extra is None or extra.clamped_entropy is None:
            raise ValueError("loss_type aent: pass extra.clamped_entropy")
        bonus = cfg.aent_coef * agg(extra.clamped_entropy)  # ()
        return -bonus, clamped_entropy_metrics(extra.clamped_entropy, mask) | {
            "loss/clamped_entropy_bonus": bonus.detach()}
    return zero, {}
