"""Differentiable per-token scores of a micro-batch in one chunked pass over the logits: the
log-probability of each sampled token and, on request, the full entropy H and PAEC's top-p
entropy H^p over a given (detached) nucleus, with one gradient written once. `entropy` and
`top_p_entropy` are the same pass over plain (N, V) rows.

Why one function. Composed from autograd ops, the update's log-probs and H^p each make their
own passes over the (b, T, V) logits and each write a dense gradient the size of the logits:
a log-softmax backward, a zero tensor the gathered token is scattered into, a zero tensor the
nucleus's entries are scattered into, the copy of the valid rows, the slice and temperature
backward, and their sums. Here every valid position's row is read once forward and once
backward, and its gradient, whatever scores were asked for, is formed in cache and written to
the logits' gradient in one pass:

    z = logits / temperature,   a = z - max z,   s = sum exp(a),   p = exp(a) / s
    log pi(y)   = a_y - log s                         d/dz = onehot(y) - p
    H           = log s - sum p a                     d/dz = -p (a - log s + H)
    H^p (small nucleus, |N| <= 1024): over the top-|N| logits    d/dz_v = -q_v (log q_v + H^p)
    H^p (large nucleus, boundary logit b known): on the mask z >= b, e = exp(a) there,
        S = sum e,  H^p = log S - sum e a / S         d/dz = e (alpha a + beta),
        alpha = -1 / S,  beta = -alpha (log S - H^p)  (per unit upstream gradient)
        (where the mask holds |N| tokens up to the rounding of the update's logits,
        `mask_is_nucleus`; otherwise the top-|N| logits)

Positions outside `mask`, and logits positions beyond the tokens (the model's last one),
get log-prob 0 and gradient 0. The nucleus is piecewise constant in z, so it carries no
gradient; its H^p value is the detached `paec.calibration.features.token_features` one, recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paec.calibration.kernels import DENSE_NUCLEUS, default_chunk_size, topk

_MASK_SLACK = 64  # a large nucleus is the mask z >= boundary within |N| / 64 tokens of |N|


def _a_floor(dtype: torch.dtype) -> float:
    """A floor for a = z - max below which exp(a - log s) is exactly 0 (s >= 1): holding a
    there changes no probability, and keeps 0 * a finite at -inf logits."""
    return -1000.0 if dtype == torch.float64 else -200.0  # exp underflows at -745 / -104


def mask_is_nucleus(count: Tensor, size: Tensor) -> Tensor:
    """Whether the mask z >= boundary, holding `count` tokens (c,), stands for a nucleus of
    `size` (c,) in the differentiable H^p: a large nucleus (> 1024) and a count within
    |N| / 64 of it. The update's forward pass rounds the logits a little differently from
    the sampler's, and bf16 logits tie, so the count at the boundary can be off by a few
    tokens, each with about 1 / |N| of the nucleus's mass; a tie block larger than the slack
    (e.g. an exactly uniform row) goes to the exact top-k instead."""
    return (size > DENSE_NUCLEUS) & ((count - size).abs() * _MASK_SLACK <= size)


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half-precision logits, else their own dtype (float64 stays exact)."""
    return torch.promote_types(logits.dtype, torch.float32)


def _at_least(z: Tensor, bound: Tensor) -> Tensor:
    """1.0 where z >= bound, else 0.0, (d, V) in z's dtype: clamp(sign(z - bound) + 1, 0, 1).
    Float arithmetic, because on the CPU a bool mask costs 5-10x more to build and apply."""
    return torch.sub(z, bound).sign_().add_(1.0).clamp_(0.0, 1.0)


def entropy(logits: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Differentiable full entropy of each row of `logits` (N, V) -> (N,), in float32 (float64
    for float64 logits). Memory: one chunk at a time in both passes, no (N, V) graph."""
    out = token_scores(*_rows(logits), entropy=True, chunk_size=chunk_size).entropy
    assert out is not None
    return out


def top_p_entropy(
    logits: Tensor, nucleus_size: Tensor, *, nucleus_min_logit: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Differentiable H^p of each row of `logits` (N, V) -> (N,) over the nucleus found by
    `token_features` (detached): its size `nucleus_size` (N,) and, optionally, its boundary
    `nucleus_min_logit` (N,), which makes large nuclei cheap (a mask instead of a top-k)."""
    out = token_scores(*_rows(logits), nucleus_size=nucleus_size,
                       nucleus_min_logit=nucleus_min_logit, chunk_size=chunk_size).top_p_entropy
    assert out is not None
    return out


def _rows(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Plain rows (N, V) as one sequence for `token_scores`: logits (1, N, V), tokens and an
    all-valid mask (1, N) (the log-probs it also returns go unused)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, V), got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    return (logits.unsqueeze(0), torch.zeros(1, n, dtype=torch.long, device=logits.device),
            torch.ones(1, n, dtype=torch.bool, device=logits.device))


@dataclass(frozen=True)
class TokenScores:
    """What `token_scores` computed; the entropies cover the valid positions only, in the
    order of `logits[:, :T][mask]` (row-major, as the trainer's feature rows)."""

    logp: Tensor  # (B, T) log pi(y_t), 0 outside the mask
    entropy: Tensor | None  # (n,) full entropy H, when asked for
    top_p_entropy: Tensor | None  # (n,) H^p over the given nucleus, when one was given


def token_scores(
    logits: Tensor, tokens: Tensor, mask: Tensor, *, temperature: float = 1.0,
    entropy: bool = False, nucleus_size: Tensor | None = None,
    nucleus_min_logit: Tensor | None = None, chunk_size: int | None = None,
) -> TokenScores:
    """Scores of `tokens` (B, T) under `logits` (B, L, V), L >= T (position t predicts
    tokens[:, t]; later positions are ignored), at the positions `mask` (B, T) bool.

    `entropy` asks for the full entropy. `nucleus_size` (n,) asks for H^p over the nucleus of
    each valid position (from `token_features` on the same policy's logits), and its
    boundary `nucleus_min_logit` (n,) lets large nuclei be a mask instead of a top-k. All
    arithmetic is float32 (float64 for float64 logits); gradients flow to `logits`."""
    if logits.dim() != 3 or tokens.shape != mask.shape or logits.shape[0] != tokens.shape[0] \
            or logits.shape[1] < tokens.shape[1]:
        raise ValueError(f"logits must be (B, L >= T, V) for tokens and mask (B, T); got "
                         f"{tuple(logits.shape)}, {tuple(tokens.shape)}, {tuple(mask.shape)}")
    n_valid = int(mask.sum())
    if nucleus_size is not None and nucleus_size.shape != (n_valid,):
        raise ValueError(f"nucleus_size must be ({n_valid},), one per valid position; got "
                         f"{tuple(nucleus_size.shape)}")
    chunk = chunk_size or default_chunk_size(logits.device)
    size = None if nucleus_size is None else nucleus_size.to(logits.device)
    bound = (None if nucleus_min_logit is None or size is None
             else nucleus_min_logit.to(logits.device))
    logp, ent, hp = _TokenScores.apply(  # type: ignore[no-untyped-call]
        logits, tokens.to(logits.device), mask.to(logits.device), temperature, entropy, size,
        bound, chunk)
    return TokenScores(logp, ent if entropy else None, hp if size is not None else None)


@dataclass
class _Chunk:
    """What the backward pass needs of one chunk of valid positions (c rows)."""

    rows: Tensor  # (c,) flat row of each position in logits.view(B * L, V)
    valid_index: slice  # these positions' range among the n valid ones
    tokens: Tensor  # (c,) the sampled tokens
    row_max: Tensor  # (c, 1) max z
    log_s: Tensor  # (c, 1) log sum exp(z - max)
    sparse: tuple[Tensor, Tensor, Tensor, Tensor] | None  # local rows (s,); (s, k) each:
    # the nucleus's top-k indices, q, and log q (0 outside the nucleus)
    dense: tuple[Tensor, Tensor] | None  # local rows (d,), log S of each mask (d,)


class _TokenScores(torch.autograd.Function):
    """Forward: log-probs (B, T), H (n,) and H^p (n,) chunk by chunk; backward: one gradient
    (B, L, V), each valid row formed in a work buffer and copied in once."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, tokens: Tensor, mask: Tensor, temperature: float,
                want_entropy: bool, nucleus_size: Tensor | None, bound: Tensor | None,
                chunk: int) -> tuple[Tensor, Tensor, Tensor]:
        n_seq, length, vocab = logits.shape
        dtype = _compute_dtype(logits)
        device = logits.device
        pos = mask.nonzero()  # (n, 2) (row, t) of each valid position, row-major
        flat_rows = pos[:, 0] * length + pos[:, 1]  # (n,) rows of logits.view(B * L, V)
        flat_tokens = tokens[mask]  # (n,)
        n = flat_rows.shape[0]
        logp_valid = torch.empty(n, dtype=dtype, device=device)  # (n,)
        ent = torch.empty(n if want_entropy else 0, dtype=dtype, device=device)  # (n,)
        hp = torch.empty(n if nucleus_size is not None else 0, dtype=dtype,
                         device=device)  # (n,)
        chunks: list[_Chunk] = []
        work = _Buffers(min(chunk, max(n, 1)), vocab, dtype, device)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            rows, toks = flat_rows[sl], flat_tokens[sl]  # (c,), (c,)
            a = work.gather(logits, rows, temperature)  # (c, V) z
            row_max = a.amax(-1, keepdim=True)  # (c, 1)
            a.sub_(row_max)  # (c, V) a = z - max <= 0
            e = torch.exp(a, out=work.e[:a.shape[0]])  # (c, V)
            s = e.sum(-1, keepdim=True)  # (c, 1)
            log_s = s.log()  # (c, 1)
            logp_valid[sl] = a.gather(1, toks[:, None]).squeeze(1) - log_s.squeeze(1)
            if want_entropy:
                floor = _a_floor(dtype)
                a_f = a.clamp_min(floor) if bool((a < floor).any()) else a  # (c, V)
                ent[sl] = (log_s - torch.linalg.vecdot(e, a_f)[:, None] / s).squeeze(1)
            sparse = dense = None
            if nucleus_size is not None:
                sizes = nucleus_size[sl]  # (c,)
                b = None if bound is None else bound[sl].to(dtype)[:, None]  # (c, 1)
                hp[sl], sparse, dense = _top_p_forward(a, e, row_max, sizes, b)
            chunks.append(_Chunk(rows, sl, toks, row_max, log_s, sparse, dense))
        logp = torch.zeros(n_seq, tokens.shape[1], dtype=dtype, device=device)  # (B, T)
        logp[mask] = logp_valid
        # Rows of the gradient no valid position writes: padding and positions past T.
        every_row = torch.ones(n_seq * length, dtype=torch.bool, device=device)  # (B * L,)
        every_row[flat_rows] = False
        ctx.save_for_backward(logits, ent, hp, mask, every_row.nonzero().squeeze(1))
        ctx.chunks, ctx.temperature, ctx.bound = chunks, temperature, bound
        if nucleus_size is None:
            ctx.mark_non_differentiable(hp)
        if not want_entropy:
            ctx.mark_non_differentiable(ent)
        ctx.set_materialize_grads(False)
        return logp, ent, hp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_logp: Tensor | None, g_ent: Tensor | None, g_hp: Tensor | None
                 ) -> tuple[Tensor | None, None, None, None, None, None, None, None]:
        logits, ent, hp, mask, unwritten = ctx.saved_tensors
        n_seq, length, vocab = logits.shape
        dtype = ent.dtype
        # d/d logits = (1 / temperature) d/dz, and every term is linear in its upstream
        # gradient: scale those once instead of the (c, V) result.
        inv_t = 1.0 / ctx.temperature
        gl = None if g_logp is None else (g_logp[mask].to(dtype) * inv_t)  # (n,)
        ge = None if g_ent is None or ent.numel() == 0 else g_ent.to(dtype) * inv_t  # (n,)
        gh = None if g_hp is None or hp.numel() == 0 else g_hp.to(dtype) * inv_t  # (n,)
        grad = torch.empty(n_seq * length, vocab, dtype=logits.dtype,
                           device=logits.device)  # (B * L, V)
        grad.index_fill_(0, unwritten, 0.0)  # padding and positions past T: no gradient
        if gl is None and ge is None and gh is None:
            return grad.zero_().view(logits.shape), None, None, None, None, None, None, None
        floor = _a_floor(dtype)
        work = _Buffers(max((c.rows.shape[0] for c in ctx.chunks), default=1), vocab, dtype,
                     logits.device)
        for c in ctx.chunks:
            sl, k = c.valid_index, c.rows.shape[0]
            a = work.gather(logits, c.rows, ctx.temperature)  # (c, V) z
            a.sub_(c.row_max).clamp_min_(floor)  # (c, V) a, finite
            p = torch.sub(a, c.log_s, out=work.e[:k]).exp_()  # (c, V) softmax
            # The dense terms are p times a per-row linear function of a: coef = u + v a.
            u = torch.zeros(k, 1, dtype=dtype, device=a.device)  # (c, 1)
            v = torch.zeros(k, 1, dtype=dtype, device=a.device)  # (c, 1)
            if gl is not None:
                u -= gl[sl, None]  # logp: -p
            if ge is not None:  # H: -p (a - log s + H)
                v -= ge[sl, None]
                u -= ge[sl, None] * (ent[sl, None] - c.log_s)
            mask_coef = None
            if gh is not None and c.dense is not None:
                local, log_big_s = c.dense  # (d,), (d,)
                # e (alpha a + beta) on the mask = p s (alpha a + beta) there.
                scale = (c.log_s[local].squeeze(1) - log_big_s).exp()  # (d,) s / S
                alpha = -gh[sl][local] * scale  # (d,) s alpha
                beta = -alpha * (log_big_s - hp[sl][local])  # (d,) s beta
                mask_coef = (local, alpha, beta)
            if ge is None and mask_coef is None:
                g = p.mul_(u)  # (c, V) only per-row constants: one pass
            else:
                g = _coefficients(a, u, v, mask_coef, c, ctx.bound).mul_(p)  # (c, V)
            if gl is not None:
                g.scatter_add_(1, c.tokens[:, None], gl[sl, None])  # + onehot(y)
            if gh is not None and c.sparse is not None:
                local, idx, q, logq = c.sparse  # (s,), (s, k) x 3
                h = hp[sl][local][:, None]  # (s, 1)
                vals = -q * (logq + h) * gh[sl][local][:, None]  # (s, k) 0 outside N
                g.index_put_((local[:, None], idx), vals, accumulate=True)
            grad.index_copy_(0, c.rows, g.to(logits.dtype))
        return grad.view(logits.shape), None, None, None, None, None, None, None


class _Buffers:
    """Two reused (C, V) buffers: allocating ~6 MB a chunk costs more than the math on it."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> None:
        self.a = torch.empty(rows, vocab, dtype=dtype, device=device)  # (C, V)
        self.e = torch.empty_like(self.a)  # (C, V)
        self.dtype = dtype

    def gather(self, logits: Tensor, rows: Tensor, temperature: float) -> Tensor:
        """z = logits.view(B * L, V)[rows] / temperature into buffer `a`, (c, V)."""
        out = self.a[:rows.shape[0]]  # (c, V)
        flat = logits.view(-1, logits.shape[-1]) if logits.is_contiguous() else None
        if flat is not None and flat.dtype == self.dtype:
            torch.index_select(flat, 0, rows, out=out)
        else:
            length = logits.shape[1]
            out.copy_(logits[rows // length, rows % length])  # strided or half precision
        return out.div_(temperature) if temperature != 1.0 else out


def _top_p_forward(a: Tensor, e: Tensor, row_max: Tensor, sizes: Tensor, bound: Tensor | None
                   ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor] | None,
                              tuple[Tensor, Tensor] | None]:
    """H^p (c,) of a chunk from a = z - max and e = exp(a) (c, V), the nucleus sizes (c,)
    and boundary logits (c, 1) or None; plus what the backward needs of the rows done by a
    top-k (local rows, indices, q) and of those done by the mask (local rows, log S)."""
    c = a.shape[0]
    out = torch.empty(c, dtype=a.dtype, device=a.device)  # (c,)
    by_mask = torch.zeros(c, dtype=torch.bool, device=a.device)  # (c,)
    dense = sparse = None
    if bound is not None and int(sizes.max()) > DENSE_NUCLEUS:
        b = bound - row_max  # (c, 1) the boundary on the a scale
        inside = _at_least(a, b)  # (c, V) 1.0 / 0.0
        by_mask = mask_is_nucleus(inside.sum(-1), sizes)  # (c,)
        local = by_mask.nonzero().squeeze(1)  # (d,)
        if local.numel() > 0:
            every = local.numel() == c
            e_in = (e if every else e[local]) * (inside if every else inside[local])  # (d, V)
            # Held at the boundary (finite): 0 * a = 0 outside the mask, even at -inf logits.
            a_in = (a if every else a[local]).clamp_min(b if every else b[local])  # (d, V)
            big_s = e_in.sum(-1)  # (d,)
            log_big_s = big_s.log()  # (d,)
            out[local] = log_big_s - torch.linalg.vecdot(e_in, a_in) / big_s
            dense = (local, log_big_s)
    local = (~by_mask).nonzero().squeeze(1)  # (s,)
    if local.numel() > 0:
        every = local.numel() == c
        ns = sizes if every else sizes[local]  # (s,)
        k = int(ns.max())
        vals, idx = topk(a if every else a[local], k)  # (s, k) descending
        inside_k = torch.arange(k, device=a.device) < ns[:, None]  # (s, k)
        logq = torch.log_softmax(vals.masked_fill(~inside_k, -torch.inf), dim=-1)  # (s, k)
        q = logq.exp()  # (s, k) 0 outside the nucleus
        logq = torch.where(inside_k, logq, 0.0)  # (s, k)
        out[local] = -(q * logq).sum(-1)
        sparse = (local, idx, q, logq)
    return out, sparse, dense


def _coefficients(a: Tensor, u: Tensor, v: Tensor,
                  mask_coef: tuple[Tensor, Tensor, Tensor] | None, c: _Chunk,
                  bound: Tensor | None) -> Tensor:
    """coef = u + v a (c, V), plus (alpha a + beta) on each mask row's nucleus z >= b; in
    place on `a` when possible (it is not needed afterwards)."""
    if mask_coef is None:
        return a.mul_(v).add_(u)
    local, alpha, beta = mask_coef  # (d,), (d,), (d,)
    assert bound is not None  # mask rows exist only with a boundary
    k = a.shape[0]
    b = bound[c.valid_index][local].to(a.dtype)[:, None] - c.row_max[local]  # (d, 1)
    every = local.numel() == k
    a_d = a if every else a[local]  # (d, V)
    inside = _at_least(a_d, b)  # (d, V)
    extra = torch.addcmul(beta[:, None], a_d, alpha[:, None]).mul_(inside)  # (d, V)
    coef = a.mul_(v).add_(u)  # (c, V)
    if every:
        return coef.add_(extra)
    coef[local] += extra
    return coef
