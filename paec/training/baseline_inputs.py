"""What the trainer hands the entropy baselines of `paec.training.entropy_losses` beside the
log-probs, for one micro-batch: ERC's entropies under pi_theta and pi_old, EntroPIC's alpha
and normalisers, AEnt's clamped entropy with its gradient.

ERC's pi_old entropy comes from the no-grad pass over the pre-update policy when the update
makes one (several epochs, a KL term), computed like the update's own; without that pass the
update's first and only epoch runs on pi_old itself, so its own entropy, detached, is pi_old's
(rho = 1 exactly, as the update's ratio is), as verl's `on_policy` branch does for log-probs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from paec.config.loss import PolicyLossConfig, PolicyLossType
from paec.training.batch import MicroBatch, OptimBatch
from paec.training.entropy_losses import BaselineInputs, clamped_entropy


def needs_update_entropy(cfg: PolicyLossConfig) -> bool:
    """Whether the loss compares the update's full entropy per token (ERC)."""
    return cfg.loss_type is PolicyLossType.ERC


def needs_old_pass(cfg: PolicyLossConfig) -> bool:
    """Whether the loss needs the pre-update log-probs before the update starts (EntroPIC:
    the whole batch's high-probability tokens are its extra term's normaliser)."""
    return cfg.loss_type is PolicyLossType.ENTROPIC


def per_position(values: Tensor, mask: Tensor) -> Tensor:
    """Values (n,) of the valid positions of `mask` (b, T), row-major, as (b, T) with 0
    elsewhere; differentiable in `values`."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)  # (b, T)
    return out.masked_scatter(mask, values)  # (b, T)


def baseline_inputs(
    cfg: PolicyLossConfig, batch: OptimBatch, mb: MicroBatch, logits: Tensor, *,
    entropy: Tensor | None, temperature: float, alpha: float | None,
) -> BaselineInputs | None:
    """The `extra` of `paec.training.losses.policy_loss` for micro-batch `mb`: from its raw
    `logits` (b, T + 1, V) with grad, the update's full `entropy` (n,) (ERC) and the
    controller's `alpha` (EntroPIC); None for the losses that need nothing."""
    mask = batch.mask[mb.rows]  # (b, T)
    if cfg.loss_type is PolicyLossType.ERC:
        if entropy is None:
            raise ValueError("loss_type erc: compute the update's entropy")
        current = per_position(entropy.detach(), mask)  # (b, T)
        old = current if batch.old_entropy is None else batch.old_entropy[mb.rows]  # (b, T)
        return BaselineInputs(entropy=current, old_entropy=old)
    if cfg.loss_type is PolicyLossType.ENTROPIC:
        return BaselineInputs(control_alpha=alpha, high_prob_tokens=batch.high_prob_tokens,
                              high_prob_seqs=batch.high_prob_seqs)
    if cfg.loss_type is PolicyLossType.AENT:
        rows = logits[:, :mask.shape[1]][mask]  # (n, V) with grad
        # AReaL: logits.float() / temperature, then the clamped entropy in float32.
        rows = rows.to(torch.promote_types(rows.dtype, torch.float32)) / temperature  # (n, V)
        return BaselineInputs(clamped_entropy=per_position(
            clamped_entropy(rows, cfg.aent_clamp), mask))  # (b, T)
    return None


def loss_entropy(cfg: PolicyLossConfig, batch: OptimBatch, mb: MicroBatch,
                 with_grad: Tensor | None) -> Tensor | None:
    """(b, T) full entropy for the policy loss of micro-batch `mb`: `with_grad` (n,) when the
    global entropy bonus is on, the sampler's detached one otherwise (for the 80/20 mask);
    None when the loss needs neither."""
    if cfg.entropy_coef == 0 and cfg.high_entropy_quantile is None:
        return None
    if cfg.entropy_coef > 0:
        assert with_grad is not None  # computed whenever the bonus is on
        values = with_grad  # (n,)
    else:
        values = batch.entropies[mb.tokens]  # (n,) the sampler's, for the 80/20 mask
    mask = batch.mask[mb.rows]  # (b, T)
    ent = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)  # (b, T)
    ent[mask] = values
    return ent
