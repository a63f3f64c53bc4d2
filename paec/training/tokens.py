"""Per-token helpers the loss functions share: the valid-token mask, a masked mean for
metrics, and advantages broadcast to tokens. Inputs are (B, T); no I/O, no trainer state."""

from __future__ import annotations

import torch
from torch import Tensor


def valid_mask(mask: Tensor, like: Tensor) -> Tensor:
    """`mask` (nonzero = a valid response token) as bool, checked against `like`'s shape."""
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {tuple(like.shape)}")
    return mask != 0  # (B, T) bool


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x over valid entries, 0 when there are none; detached (a metric)."""
    x = x.detach()  # (B, T)
    total = torch.where(valid, x, 0.0).sum()  # ()
    return total / valid.sum().clamp_min(1).to(x.dtype)  # ()


def token_advantages(advantages: Tensor, like: Tensor) -> Tensor:
    """(B,) or (B, T) advantages as (B, T), detached: they are constants of the objective,
    so a stray graph cannot leak in."""
    if advantages.dim() == 1 and advantages.shape[0] == like.shape[0]:
        advantages = advantages.unsqueeze(-1)  # (B, 1)
    elif advantages.shape != like.shape:
        raise ValueError(f"advantages shape {tuple(advantages.shape)} is neither (B,) nor "
                         f"{tuple(like.shape)}")
    return advantages.detach().expand_as(like)  # (B, T)
