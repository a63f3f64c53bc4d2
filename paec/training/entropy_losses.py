"""The 2025-2026 entropy baselines as pure tensor functions, each as its authors' code does it.

    r_t = exp(clamp(logp_t - old_logp_t, -20, 20))     (ERC, EntroPIC; CE-GPPO does not clamp)
    dual-clip PPO (verl `compute_policy_loss_vanilla`, arXiv 1912.09729):
        l_t = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), then min(l_t, -c A) where A < 0
    CE-GPPO   (arXiv 2509.20712, Kwai-Klear/CE-GPPO `compute_gppo_loss_general_beta`)
        A < 0, r < 1 - eps_low:  l_t = -beta1 (1 - eps_low) (r / sg(r)) A
        A > 0, r > 1 + eps_high: l_t = -beta2 (1 + eps_high) (r / sg(r)) A
        otherwise -r A; then the dual clip min(l_t, -c A) where A < 0
    ERC       (arXiv 2512.05591, Kwai-Klear/ERC `compute_policy_loss_grpo_erc`)
        rho_t = (H_t(pi_theta) + 1e-8) / (H_t(pi_old) + 1e-8); the dual-clip loss, detached
        (value kept, gradient 0) unless l < rho_t < h
    EntroPIC  (arXiv 2511.15248, yk7333/EntroPIC `compute_policy_loss_entropic`)
        the dual-clip loss, plus alpha * agg over K of (-r |A|), K = {t : pi_theta(y_t) > p_hi};
        alpha from the PI controller (`paec.training.entropy_control`)
    AEnt      (arXiv 2509.03493, AReaL recipe/AEnt `clamped_softmax_entropy`)
        Hc_t: the entropy of softmax(z_t) with the int(V * clamp) lowest logits removed

Inputs are (B, T) like `paec.training.losses`: `logp` (with grad), `old_logp`, `mask` (nonzero
= valid), `advantages` (B,) or (B, T). Per-token losses are 0 at padding; metrics are detached
0-dim tensors. No I/O, no trainer state. `paec.training.losses.policy_loss` composes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from paec.training.tokens import masked_mean, token_advantages, valid_mask

Metrics = dict[str, Tensor]

_LOG_RATIO_BOUND = 20.0  # verl: clamp(negative_approx_kl, -20, 20) "for stability"
_ENTROPY_EPS = 1e-8  # ERC: (entropy + 1e-8) / (old_entropy + 1e-8)


@dataclass(frozen=True)
class BaselineInputs:
    """What the entropy baselines need beside log-probs; each None unless its method is on."""

    entropy: Tensor | None = None  # (B, T) H_t(pi_theta) at the update, detached (ERC)
    old_entropy: Tensor | None = None  # (B, T) H_t(pi_old) (ERC)
    clamped_entropy: Tensor | None = None  # (B, T) AEnt's Hc_t, with grad (AEnt)
    control_alpha: float | None = None  # EntroPIC's alpha for this update
    high_prob_tokens: float | None = None  # EntroPIC: |K| over the whole batch
    high_prob_seqs: float | None = None  # EntroPIC: sequences with a token in K, whole batch


# ----------------------------------------------------------------------------- helpers


def _ratio(logp: Tensor, old_logp: Tensor, valid: Tensor, *, clamp: bool) -> Tensor:
    # Padding may hold garbage log-probs: ratio 1 there (inf * 0 would be NaN).
    log_ratio = torch.where(valid, logp - old_logp.detach(), 0.0)  # (B, T)
    if clamp:
        log_ratio = log_ratio.clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)  # (B, T)
    return torch.exp(log_ratio)  # (B, T)


def _dual_clip(loss: Tensor, adv: Tensor, dual_clip: float) -> tuple[Tensor, Tensor]:
    """verl's dual clip: min(loss, -c A) where A < 0, and where that bound is active."""
    bound = -adv * dual_clip  # (B, T)
    return torch.where(adv < 0, torch.minimum(bound, loss), loss), (loss > bound) & (adv < 0)


def _metrics(ratio: Tensor, low: Tensor, high: Tensor, dual: Tensor, valid: Tensor) -> Metrics:
    dtype = ratio.dtype
    return {
        "policy/clip_frac_low": masked_mean(low.to(dtype), valid),  # ()
        "policy/clip_frac_high": masked_mean(high.to(dtype), valid),  # ()
        "policy/dual_clip_frac": masked_mean(dual.to(dtype), valid),  # ()
        "policy/ratio_mean": masked_mean(ratio, valid),  # ()
    }


def dual_clip_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    clip_low: float = 0.2, clip_high: float = 0.28, dual_clip: float = 3.0,
) -> tuple[Tensor, Metrics]:
    """verl's dual-clip PPO surrogate, the base of ERC and EntroPIC, with the log-ratio clamped
    to [-20, 20] as their code does. Returns (per-token loss (B, T), 0 at padding; metrics)."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    ratio = _ratio(logp, old_logp, valid, clamp=True)  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    active = (clipped > unclipped) & valid  # (B, T) verl's pg_clipfrac
    loss, dual = _dual_clip(torch.maximum(unclipped, clipped), adv, dual_clip)  # (B, T) x 2
    metrics = _metrics(ratio, active & (adv < 0), active & (adv > 0), dual & valid, valid)
    return torch.where(valid, loss, 0.0), metrics  # (B, T)


# ----------------------------------------------------------------------------- CE-GPPO


def ce_gppo_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    clip_low: float = 0.2, clip_high: float = 0.28, beta1: float = 0.75, beta2: float = 1.0,
    dual_clip: float = 3.0,
) -> tuple[Tensor, Metrics]:
    """CE-GPPO: tokens outside the clip range keep a bounded gradient instead of none.

    As `compute_gppo_loss_general_beta`: with low = (A < 0 and r < 1 - clip_low) and
    high = (A > 0 and r > 1 + clip_high), l = -beta1 (1 - clip_low) (r / sg(r)) A on low,
    -beta2 (1 + clip_high) (r / sg(r)) A on high, -r A elsewhere; then verl's dual clip
    min(l, -c A) for A < 0, which the paper's formula leaves out. r / sg(r) is 1 in value, so
    the value on low/high is the clipped PPO value times beta, and the gradient is
    beta (1 -/+ eps) A grad log pi. The ratio is not clamped (their code does not).
    `policy/clip_frac_low` / `_high` count the low / high tokens (they keep a gradient)."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    ratio = _ratio(logp, old_logp, valid, clamp=False)  # (B, T)
    low = (ratio < 1.0 - clip_low) & (adv < 0) & valid  # (B, T)
    high = (ratio > 1.0 + clip_high) & (adv > 0) & valid  # (B, T)
    unit = ratio / ratio.detach()  # (B, T) 1 in value, grad log pi in gradient
    loss = torch.where(low, -beta1 * (1.0 - clip_low) * unit * adv,
                       torch.where(high, -beta2 * (1.0 + clip_high) * unit * adv,
                                   -ratio * adv))  # (B, T)
    loss, dual = _dual_clip(loss, adv, dual_clip)  # (B, T) x 2
    metrics = _metrics(ratio, low, high, dual & valid, valid)
    return torch.where(valid, loss, 0.0), metrics  # (B, T)


# ----------------------------------------------------------------------------- ERC


def erc_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, entropy: Tensor,
    old_entropy: Tensor, *, clip_low: float = 0.2, clip_high: float = 0.28,
    dual_clip: float = 3.0, low: float = 0.95, high: float = 1.05,
) -> tuple[Tensor, Metrics]:
    """ERC, entropy ratio clipping, as `compute_policy_loss_grpo_erc` (the DAPO variant): the
    dual-clip loss, kept with its gradient only where rho_t = (H_t + 1e-8) / (H_old_t + 1e-8)
    lies in (low, high), else detached: its value still counts in the loss (and its
    normaliser), its gradient is 0. `entropy` (B, T) is the full entropy of the policy being
    updated, `old_entropy` (B, T) that of pi_old at the same positions; both are only
    compared, so neither carries gradient here."""
    valid = valid_mask(mask, logp)  # (B, T)
    loss, metrics = dual_clip_token_loss(logp, old_logp, advantages, mask, clip_low=clip_low,
                                         clip_high=clip_high, dual_clip=dual_clip)  # (B, T)
    rho = (entropy.detach() + _ENTROPY_EPS) / (old_entropy.detach() + _ENTROPY_EPS)  # (B, T)
    rho = torch.where(valid, rho, 1.0)  # (B, T) padding: any value, never used
    keep = (rho > low) & (rho < high) & valid  # (B, T)
    metrics["policy/erc_kept_frac"] = masked_mean(keep.to(loss.dtype), valid)
    metrics["policy/entropy_ratio_mean"] = masked_mean(rho, valid)
    return torch.where(keep, loss, loss.detach()), metrics  # (B, T)


# ----------------------------------------------------------------------------- EntroPIC


def entropic_token_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
    clip_low: float = 0.2, clip_high: float = 0.28, dual_clip: float = 3.0,
) -> tuple[Tensor, Metrics]:
    """EntroPIC's per-token loss, as `compute_policy_loss_entropic`: the dual-clip PPO loss
    (B, T) (its extra term is `entropic_extra_term`, aggregated on its own)."""
    return dual_clip_token_loss(logp, old_logp, advantages, mask, clip_low=clip_low,
                                clip_high=clip_high, dual_clip=dual_clip)


def entropic_extra_term(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, high_prob: float = 0.95,
) -> tuple[Tensor, Tensor, Metrics]:
    """EntroPIC's extra term per token: -r |A| (B, T), with grad through r (clamped as the
    surrogate's), on the high-probability tokens K = {valid t : log pi_theta(y_t) >
    log high_prob} (0 elsewhere), and K itself (B, T) bool. The caller aggregates it over K
    only, with K's own normaliser (their `agg_loss(..., loss_mask=prob_mask)`), and scales it
    by the controller's alpha: alpha > 0 (entropy above target) raises the probability of
    tokens already likely, which lowers the entropy; alpha < 0 does the opposite."""
    valid = valid_mask(mask, logp)  # (B, T)
    adv = token_advantages(advantages, logp)  # (B, T)
    ratio = _ratio(logp, old_logp, valid, clamp=True)  # (B, T)
    in_k = (logp.detach() > math.log(high_prob)) & valid  # (B, T)
    term = torch.where(in_k, -ratio * adv.abs(), 0.0)  # (B, T)
    return term, in_k, {"policy/high_prob_frac": masked_mean(in_k.to(term.dtype), valid)}


def high_prob_counts(logp: Tensor, mask: Tensor, high_prob: float) -> tuple[float, float]:
    """(tokens, sequences with at least one token) of EntroPIC's K under the log-probs `logp`
    (B, T): the whole-batch normalisers of its extra term. One host sync."""
    in_k = (logp.detach() > math.log(high_prob)) & valid_mask(mask, logp)  # (B, T)
    return float(in_k.sum()), float((in_k.sum(-1) > 0).sum())


# ----------------------------------------------------------------------------- AEnt


def clamped_entropy(logits: Tensor, clamp: float) -> Tensor:
    """AEnt's clamped entropy of each row of `logits` (N, V) (already divided by the
    temperature), in float32 (float64 stays float64), with gradient: the entropy of the
    softmax over the logits left after removing the k = int(V * clamp) lowest of each row
    (`clamped_softmax_entropy`; k = 0 is the full entropy). The removed set is chosen without
    gradient; ties among the lowest logits are broken by `topk`. (N,).

    Plain autograd over the (N, V) rows: it keeps a few (N, V) buffers for the backward, so
    pass a micro-batch's valid rows, not a whole batch's."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, V), got shape {tuple(logits.shape)}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (N, V)
    k = int(z.shape[-1] * clamp)
    if k > 0:
        with torch.no_grad():
            lowest = z.topk(k, dim=-1, largest=False).indices  # (N, k)
            removed = torch.zeros_like(z, dtype=torch.bool).scatter_(1, lowest, True)  # (N, V)
        z = z.masked_fill(removed, -math.inf)  # (N, V)
    logq = torch.log_softmax(z, dim=-1)  # (N, V)
    q = logq.exp()  # (N, V)
    # 0 log 0 = 0 at the removed tokens (and any -inf logit): log q is replaced before the
    # product, whose backward would otherwise meet 0 * -inf = NaN.
    return -(q * torch.where(q > 0, logq, 0.0)).sum(-1)  # (N,)


def clamped_entropy_metrics(values: Tensor, mask: Tensor) -> Metrics:
    """`entropy/clamped`: the mean of AEnt's Hc_t (B, T) over the valid tokens."""
    return {"entropy/clamped": masked_mean(values, valid_mask(mask, values))}
