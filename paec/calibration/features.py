"""Per-token features of PAEC from logits: full entropy, local top-p entropy, nucleus size and
the top-two log-probability gap, in one chunked pass, detached. The differentiable entropies
that carry the gradient of the penalty and of the global entropy bonus are in
`paec.calibration.scores`.

Definitions (docs/method.md, docs/metrics.md): for a row of logits z with
p = softmax(z), sort p descending; the nucleus N is the smallest prefix whose mass reaches p
(the top-1 token always belongs to it); q = p / sum_N p inside it, and

    H   = -sum_v p_v log p_v                 full entropy (nats)
    H^p = -sum_{v in N} q_v log q_v          local top-p entropy
    gap = log p_(1) - log p_(2) >= 0         top-two gap (inf if only one token has mass)

Cost. V is up to ~152k, so logits are processed a chunk of rows at a time, and never sorted in
the common case: an exact top-k (found through block maxima, see
`paec.calibration.kernels.topk`) gives the nucleus of every row whose top-k mass reaches p;
only the other rows fall back to a larger k, and then to a histogram search of the boundary
(flat rows, `_histogram_nucleus`), which sorts only the few tokens of the boundary's bin.
Everything here runs without autograd.

Run `python bench/features.py` for the speed and memory figures in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from paec.calibration.kernels import DENSE_NUCLEUS, Workspace, default_chunk_size, topk

_FALLBACK_K_FACTOR = 16  # top-p search tiers: k, then 16k (up to 1024), then a histogram
_HIST_BINS = 4096  # value bins of the histogram search for the nucleus boundary (flat rows)
_HIST_RANGE = 40.0  # nats below the row maximum that the bins cover (exp(-40) ~ 4e-18)
_HIST_MAX_CANDIDATES = 2048  # boundary bins holding more tokens than this (ties) are sorted


@dataclass(frozen=True)
class TokenFeatures:
    """Detached per-token statistics of N positions, all float32 on the logits' device."""

    entropy: Tensor  # (N,) full entropy H
    top_p_entropy: Tensor  # (N,) H^p
    nucleus_size: Tensor  # (N,) int64 |N|
    top2_gap: Tensor  # (N,) log p1 - log p2
    nucleus_min_logit: Tensor  # (N,) the logit of the last token inside the nucleus

    def __len__(self) -> int:
        return int(self.entropy.shape[0])

    def tensors(self) -> tuple[Tensor, ...]:
        """The fields in order (no copies: dataclasses.astuple would deep-copy them)."""
        return (self.entropy, self.top_p_entropy, self.nucleus_size, self.top2_gap,
                self.nucleus_min_logit)

    def select(self, index: Tensor | slice) -> TokenFeatures:
        """The features of a subset of positions (a slice, a bool mask or indices)."""
        return TokenFeatures(
            self.entropy[index], self.top_p_entropy[index],
            self.nucleus_size[index], self.top2_gap[index], self.nucleus_min_logit[index],
        )

    @staticmethod
    def cat(parts: list[TokenFeatures]) -> TokenFeatures:
        """Concatenate the features of several micro-batches into one batch."""
        return TokenFeatures(
            torch.cat([f.entropy for f in parts]), torch.cat([f.top_p_entropy for f in parts]),
            torch.cat([f.nucleus_size for f in parts]), torch.cat([f.top2_gap for f in parts]),
            torch.cat([f.nucleus_min_logit for f in parts]),
        )


class _Work:
    """The buffers of one chunk (c, V): z - max and exp(z - max) always, the histogram's
    float64 masses, bin indices, a float32 scratch row and a flag row on demand."""

    def __init__(self, space: Workspace, rows: int, vocab: int, device: torch.device) -> None:
        self.space, self.rows, self.vocab, self.device = space, rows, vocab, device
        self.shifted = self.get("shifted", torch.float32)  # (c, V)
        self.expd = self.get("expd", torch.float32)  # (c, V)

    def get(self, name: str, dtype: torch.dtype) -> Tensor:
        return self.space.buffer(name, self.rows, self.vocab, dtype, self.device)

    def narrow(self, rows: int) -> _Work:
        """The same buffers, for the first `rows` rows (the last, shorter chunk)."""
        return _Work(self.space, rows, self.vocab, self.device)


def token_features(
    logits: Tensor, top_p: float = 0.9, *, top_k: int = 64, chunk_size: int | None = None,
    workspace: Workspace | None = None,
) -> TokenFeatures:
    """All detached features of `logits` (N, V) in one chunked pass, computed in float32.
    `workspace` keeps the work buffers for the next call.

    Logits must be finite or -inf (masked tokens); each row needs at least one finite value.
    """
    _check_logits(logits)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    n_rows, vocab = logits.shape
    device = logits.device
    out_h = torch.empty(n_rows, device=device)  # (N,)
    out_hp = torch.empty(n_rows, device=device)  # (N,)
    out_n = torch.empty(n_rows, dtype=torch.long, device=device)  # (N,)
    out_gap = torch.empty(n_rows, device=device)  # (N,)
    out_min = torch.empty(n_rows, device=device)  # (N,)
    with torch.no_grad():
        for start, z, work in _chunks(logits, chunk_size, workspace):
            c = z.shape[0]
            vals, _ = topk(z, min(top_k, vocab))  # (c, k) descending
            h, log_s = _entropy_rows(z, vals[:, :1], work)  # (c,), (c,) f64
            out_h[start:start + c] = h
            out_gap[start:start + c] = vals[:, 0] - vals[:, 1]
            # work now holds z - max and exp(z - max) of the chunk: the histogram reuses them.
            hp, n, last = _top_p_rows(z, vals, log_s, top_p, work)
            out_hp[start:start + c] = hp
            out_n[start:start + c] = n
            out_min[start:start + c] = last
    return TokenFeatures(out_h, out_hp, out_n, out_gap, out_min)


def token_entropy(logits: Tensor, *, chunk_size: int | None = None,
                  workspace: Workspace | None = None) -> Tensor:
    """Only the detached full entropy of `logits` (N, V) -> (N,), float32: the pass that
    `token_features` builds on, for runs that need no top-p statistics."""
    _check_logits(logits)
    out = torch.empty(logits.shape[0], device=logits.device)  # (N,)
    with torch.no_grad():
        for start, z, work in _chunks(logits, chunk_size, workspace):
            out[start:start + z.shape[0]] = _entropy_rows(z, z.amax(-1, keepdim=True), work)[0]
    return out


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, V) with V >= 2, got shape {tuple(logits.shape)}")


def _chunks(logits: Tensor, chunk_size: int | None, workspace: Workspace | None
            ) -> Iterator[tuple[int, Tensor, _Work]]:
    """(start, float32 rows (c, V), work buffers) for each chunk of rows. The work buffers
    are reused: allocating ~20 MB per chunk costs more than the math on it."""
    n_rows, vocab = logits.shape
    chunk = chunk_size or default_chunk_size(logits.device)
    work = _Work(workspace or Workspace(), min(chunk, n_rows), vocab, logits.device)
    for start in range(0, n_rows, chunk):
        z = logits[start:start + chunk]  # (c, V)
        if z.dtype != torch.float32:
            z = z.float()  # (c, V) bf16 / fp16 logits: all arithmetic in float32
        yield start, z, work if z.shape[0] == work.rows else work.narrow(z.shape[0])


def _entropy_rows(z: Tensor, row_max: Tensor, work: _Work) -> tuple[Tensor, Tensor]:
    """Full entropy (c,) and log sum exp(z - max) (c,) in float64, of rows `z` (c, V) whose
    maxima are `row_max` (c, 1): one exp pass and one dot product. Leaves z - max, e =
    exp(z - max), e in float64 and e (z - max) (0 at -inf logits) in `work`'s buffers
    (`shifted`, `expd`, `e64`, `ez`), for the histogram search to reuse."""
    z_sh = torch.sub(z, row_max, out=work.shifted)  # (c, V) z - max, <= 0
    e = torch.exp(z_sh, out=work.expd)  # (c, V) exp(z - max) in (0, 1]
    # f64: the nucleus boundary depends on it. Through reused buffers: sum(dtype=f64) or a
    # dot product would allocate (and page-fault) a (c, V) temporary at every call.
    s = work.get("e64", torch.float64).copy_(e).sum(-1)  # (c,)
    ez = torch.mul(e, z_sh, out=work.get("ez", e.dtype))  # (c, V) NaN at -inf (0 * -inf)
    # H = log s - sum_v e_v (z_v - max) / s: every term is small, so fp32 keeps digits.
    ez_sum = ez.sum(-1)  # (c,)
    if bool(ez_sum.isnan().any()):
        ez.nan_to_num_(nan=0.0)  # a -inf logit has no mass: it adds nothing
        ez_sum = ez.sum(-1)  # (c,)
    log_s = s.log()  # (c,)
    return (log_s - ez_sum / s).float(), log_s


def _top_p_rows(z: Tensor, vals: Tensor, log_s: Tensor, p: float,
                work: _Work) -> tuple[Tensor, Tensor, Tensor]:
    """H^p, |N| and the logit of the last nucleus token, of rows `z` (c, V) given their
    descending top-k `vals` (c, k), log sum exp(z - max) `log_s` (c,) f64 and the work
    buffers z - max, exp(z - max) (c, V) each. Exact from the top-k where its mass reaches p;
    the other rows go to a 16x larger k while it stays small (a tier is skipped for a row when
    even its bound on the tier's mass, the mass found so far plus the smallest probability
    found times the tokens still to come, falls short of p), then to a histogram search of
    the boundary (`_histogram_nucleus`), which needs no sort."""
    vocab = z.shape[1]
    lse = vals[:, :1].double() + log_s[:, None]  # (c, 1) the boundary is decided in f64
    k = vals.shape[1]
    hp, n, covered, mass, smallest = _nucleus(vals.double() - lse, p, complete=k == vocab)
    last = vals.gather(1, (n - 1)[:, None]).squeeze(1).float()  # (c,)
    rows = (~covered).nonzero().squeeze(1)  # (r,) rows still open
    k_next = min(k * _FALLBACK_K_FACTOR, vocab)
    if rows.numel() > 0 and k_next <= DENSE_NUCLEUS:
        bound = mass[rows] + (k_next - k) * smallest[rows]  # (r,) max mass of the top-k_next
        rows_now = rows[bound >= p]  # (r',) rows that may finish in this tier
        if rows_now.numel() > 0:
            top = topk(z[rows_now], k_next)[0]  # (r', k_next)
            hp_r, n_r, cov_r, _, _ = _nucleus(top.double() - lse[rows_now], p,
                                              complete=k_next == vocab)
            hp[rows_now], n[rows_now] = hp_r, n_r
            last[rows_now] = top.gather(1, (n_r - 1)[:, None]).squeeze(1).float()
            covered[rows_now] = cov_r
            rows = rows[~covered[rows]]
    if rows.numel() == z.shape[0]:  # every row open (a flat chunk): no copies
        hp, n, last = _histogram_nucleus(z, vals[:, :1], work.shifted,
                                         work.get("e64", torch.float64),
                                         work.get("ez", z.dtype), log_s, p, work)
    elif rows.numel() > 0:
        hp_r, n_r, last_r = _histogram_nucleus(
            z[rows], vals[rows, :1], work.shifted[rows], work.get("e64", torch.float64)[rows],
            work.get("ez", z.dtype)[rows], log_s[rows], p, work.narrow(rows.numel()))
        hp[rows], n[rows], last[rows] = hp_r, n_r, last_r
    return hp, n, last


def _histogram_nucleus(z: Tensor, row_max: Tensor, z_sh: Tensor, e64: Tensor, ez: Tensor,
                       log_s: Tensor, p: float, work: _Work) -> tuple[Tensor, Tensor, Tensor]:
    """The nucleus of rows `z` (r, V) without a sort, for flat rows whose nucleus is large:
    H^p (r,), |N| (r,) and the last nucleus logit (r,), from the row maxima `row_max` (r, 1),
    z - max `z_sh`, e = exp(z - max) in float64 `e64` and e (z - max) `ez` (0 at -inf
    logits) (r, V), log sum e `log_s` (r,) f64, and `work`'s spare buffers (r rows).

    The values z - max in [lo, 0] (lo = the row minimum, at most 40 nats down; lower ones
    join the lowest bin) fall in 4096 equal bins, a monotone map, so a bin's tokens all
    precede the next lower bin's in the sorted order. The f64 masses of the bins, summed
    from the top, give the bin that holds the boundary; every token above it is in the
    nucleus, every token below it out, and only that bin's few tokens are sorted (a top-k
    of their count) to apply the rule "in while the mass ahead is below p" one token at a
    time, exactly as a full sort would. H^p = log S_N - sum_N e (z - max) / S_N with
    S_N = sum_N e, from the same bin sums. A boundary bin of more than 2048 tokens (many
    exact ties) falls back to a sort.

    Cost: three scatter-adds (masses, sums of e (z - max), counts) and a few passes over
    the rows, all into reused buffers. Kept as one function on purpose: it is one pass over
    those reused buffers, and splitting it would pass a dozen tensors between the pieces."""
    r, vocab = z.shape
    nb = _HIST_BINS
    f64 = torch.float64
    lo = z_sh.amin(-1, keepdim=True).clamp_min(-_HIST_RANGE)  # (r, 1) -inf -> -40
    scale = nb / (-lo).clamp_min(1e-30)  # (r, 1) all-tied rows: one bin
    scratch = work.get("scratch", z.dtype)  # (r, V)
    # Bin 0 holds the largest values: cumulative sums then run from the top, no flips.
    pos = torch.mul(z_sh, -scale, out=scratch).clamp_(0, nb - 1)  # (r, V) decreasing in z
    idx = work.get("bin", torch.int64).copy_(pos)  # (r, V) bin of each token (truncation)
    # Masses in f64: the boundary depends on them. The sums of e (z - max) only enter H^p.
    mass = torch.zeros(r, nb, dtype=f64, device=z.device).scatter_add_(1, idx, e64)  # (r, nb)
    mass_ez = torch.zeros(r, nb, dtype=ez.dtype, device=z.device).scatter_add_(
        1, idx, ez).to(f64)  # (r, nb)
    count = torch.zeros(r, nb, dtype=ez.dtype, device=z.device).scatter_add_(
        1, idx, torch.ones(1, 1, dtype=ez.dtype, device=z.device).expand(r, vocab))  # (r, nb)
    cum = mass.cumsum(-1)  # (r, nb) mass of the bins from the top down
    s = log_s.exp()  # (r,) sum e
    target = torch.minimum(p * s, cum[:, -1])  # (r,) p = 1: every token with mass
    b_desc = (cum >= target[:, None]).to(torch.uint8).argmax(-1)  # (r,) first bin reaching it
    b = b_desc[:, None]  # (r, 1) the boundary bin
    # Mass, sum e (z - max) and count of the bins above the boundary bin (0 when it is the
    # top one).
    prev = (b_desc - 1).clamp_min(0)[:, None]  # (r, 1)
    top_bin = b_desc == 0  # (r,)
    mass_above = cum.gather(1, prev).squeeze(1).masked_fill(top_bin, 0.0)  # (r,)
    ez_above = mass_ez.cumsum(-1).gather(1, prev).squeeze(1).masked_fill(top_bin, 0.0)  # (r,)
    count_cum = count.cumsum(-1)  # (r, nb) exact: integers below 2^24
    n_above = count_cum.gather(1, prev).squeeze(1).masked_fill(top_bin, 0.0).long()  # (r,)
    n_bin = count.gather(1, b).squeeze(1).long()  # (r,)
    hp = torch.zeros(r, dtype=f64, device=z.device)  # (r,)
    n = torch.zeros(r, dtype=torch.long, device=z.device)  # (r,)
    last = torch.zeros(r, dtype=z.dtype, device=z.device)  # (r,)
    ties = n_bin > _HIST_MAX_CANDIDATES  # (r,) rows whose boundary bin is too crowded
    any_ties = bool(ties.any())
    if any_ties:
        top = z[ties].sort(dim=-1, descending=True).values  # (t, V)
        lse = top[:, :1].double() + log_s[ties, None]  # (t, 1)
        hp[ties], n[ties], _, _, _ = _nucleus(top.double() - lse, p, complete=True)
        last[ties] = top.gather(1, (n[ties] - 1)[:, None]).squeeze(1)
    rows = (~ties).nonzero().squeeze(1)  # (r',)
    if rows.numel() == 0:
        return hp, n, last
    k = int(n_bin[rows].max())
    # The boundary bin's tokens, everything else -inf: their top-k is their sorted order.
    outside = torch.ne(idx, b, out=work.get("flag", torch.bool))  # (r, V)
    in_bin = scratch.copy_(z).masked_fill_(outside, -torch.inf)  # (r, V)
    cand = topk(in_bin if not any_ties else in_bin[rows], k)[0]  # (r', k) descending
    c_sh = cand - row_max[rows]  # (r', k) z - max, the same op as z_sh's
    c_e = c_sh.exp().to(f64)  # (r', k) 0 for the padding (-inf)
    cum_in = c_e.cumsum(-1)  # (r', k)
    ahead = mass_above[rows, None] + torch.cat(
        [torch.zeros_like(cum_in[:, :1]), cum_in[:, :-1]], dim=-1)  # (r', k) mass ahead
    inside = (ahead < target[rows, None]) & (c_e > 0)  # (r', k) the boundary rule
    inside[:, 0] |= n_above[rows] == 0  # the top-1 always belongs to the nucleus
    s_n = mass_above[rows] + (c_e * inside).sum(-1)  # (r',) S_N
    t_n = ez_above[rows] + torch.where(inside, c_e * c_sh.to(f64), 0.0).sum(-1)  # (r',)
    n_in = inside.sum(-1)  # (r',)
    n[rows] = n_above[rows] + n_in
    hp[rows] = torch.where(n[rows] > 1, (s_n.log() - t_n / s_n).clamp_min(0.0), 0.0)
    last[rows] = cand.gather(1, (n_in - 1).clamp_min(0)[:, None]).squeeze(1)
    return hp, n, last


def _nucleus(logp: Tensor, p: float, *, complete: bool
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Nucleus of rows from their descending log-probs `logp` (r, k), a prefix of the sorted
    distribution. Returns H^p (r,), |N| (r,), whether the prefix held the whole nucleus (r,)
    (`complete` says the prefix is the whole vocabulary), the prefix's mass (r,) and its
    smallest probability (r,)."""
    probs = logp.exp()  # (r, k)
    cum = probs.cumsum(-1)  # (r, k)
    before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)  # (r, k) mass ahead
    # A token is in the nucleus while the mass ahead of it is below p; the top-1 always is.
    # Tokens whose probability underflows to 0 carry no mass and are left out (p = 1 case).
    inside = (before < p) & (probs > 0)  # (r, k)
    inside[:, 0] = True
    mass = (probs * inside).sum(-1)  # (r,)
    plogp = torch.where(inside, probs * logp, 0.0).sum(-1)  # (r,)
    size = inside.sum(-1)  # (r,)
    hp = torch.where(size > 1, (mass.log() - plogp / mass).clamp_min(0.0), 0.0)  # (r,)
    covered = (cum[:, -1] >= p) | complete  # (r,)
    return hp, size, covered, cum[:, -1], probs[:, -1]
