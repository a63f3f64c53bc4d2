"""Shared kernels of the calibration passes: an exact block-maxima top-k for the CPU, the
reusable work buffers of the chunked passes, the chunk size per device, and the quantile
threshold that the mask (and the trainer's 80/20 token selection) use.

These are numeric building blocks, not part of the method: `features`, `scores` and `mask`
compose them; the trainer uses `quantile_threshold` for the high-entropy token quantile.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_BLOCK = 64  # vocabulary block for the block-maxima top-k; 64 floats = one 256-byte run
DENSE_NUCLEUS = 1024  # differentiable H^p: nuclei larger than this use a mask, not a top-k


def default_chunk_size(device: torch.device) -> int:
    """32 rows on the CPU, where a chunk (~20 MB at V = 152k) stays in cache; 1024 on CUDA."""
    return 1024 if device.type == "cuda" else 32


class Workspace:
    """Work buffers of the chunked passes, kept from one call to the next. On the CPU,
    allocating a fresh (C, V) buffer means first-touch page faults that cost more than the
    arithmetic on it, and the sampler calls the feature pass at every decoding step: it
    keeps one `Workspace` for all of them. Not shared between threads."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def buffer(self, name: str, rows: int, vocab: int, dtype: torch.dtype,
               device: torch.device) -> Tensor:
        """A (rows, vocab) buffer `name`, contiguous, contents undefined."""
        buf = self._buffers.get(name)
        if (buf is None or buf.shape[0] < rows or buf.shape[1] != vocab or buf.dtype != dtype
                or buf.device != device):
            buf = torch.empty(rows, vocab, dtype=dtype, device=device)  # (R, V)
            self._buffers[name] = buf
        return buf[:rows]


def topk(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k values (descending) and indices of each row of `z` (c, V), 3x faster than
    `torch.topk` over the whole row on the CPU when k * 64 << V: take the k blocks of 64 with
    the largest maxima; every top-k value lies in one of them (a value outside them is beaten
    by the k block maxima, one per block), so a top-k over those k * 64 candidates is exact
    (tied values may come from a different index, which changes no feature)."""
    c, vocab = z.shape
    n_blocks = vocab // _BLOCK
    if z.device.type != "cpu" or k * _BLOCK * 4 > vocab:
        return torch.topk(z, k, dim=-1)
    head = n_blocks * _BLOCK
    block_max = z[:, :head].view(c, n_blocks, _BLOCK).amax(-1)  # (c, nb)
    top_blocks = block_max.topk(k, dim=-1).indices  # (c, k)
    offsets = torch.arange(_BLOCK, device=z.device)  # (B,)
    cand = (top_blocks[:, :, None] * _BLOCK + offsets).view(c, k * _BLOCK)  # (c, k*B)
    if head < vocab:  # the tail that does not fill a block is always a candidate
        tail = torch.arange(head, vocab, device=z.device).expand(c, vocab - head)  # (c, rem)
        cand = torch.cat([cand, tail], dim=-1)  # (c, k*B + rem)
    vals, pos = z.gather(1, cand).topk(k, dim=-1)  # (c, k)
    return vals, cand.gather(1, pos)


def quantile_threshold(values: Tensor, valid: Tensor, q: float) -> Tensor:
    """The q-quantile of values[valid] with "higher" interpolation, 0-dim, in values' dtype.

    Identical to torch.quantile(values[valid], q, interpolation="higher"), but via
    torch.kthvalue: torch.quantile refuses inputs above 2^24 elements (pytorch #64947), which a
    global token batch exceeds at scale. Tensors of any shape are flattened.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    flat = values.reshape(-1)[valid.reshape(-1)]  # (N_valid,)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantile_threshold: no valid values")
    # torch.quantile computes the rank as q * (n - 1) in the input's dtype, then ceil(); do the
    # same so the index is identical, except above 2^24 where float32 cannot hold n - 1.
    rank_dtype = torch.float64 if flat.dtype == torch.float64 or n - 1 > 2**24 else torch.float32
    rank = math.ceil(float(torch.tensor(q, dtype=rank_dtype) * (n - 1)))
    k = min(max(rank, 0), n - 1) + 1  # kthvalue is 1-based
    if flat.device.type == "cpu":
        # The CPU kthvalue is a median-of-3 quickselect, quadratic on reverse-sorted input
        # (measured with torch 2.13: 0.3 s at 1e5 elements, hours at 2^24). A fixed shuffle makes
        # the order random; the k-th value does not depend on it. CUDA uses a radix select.
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # (N_valid,)
        flat = flat[perm]  # (N_valid,)
    return flat.kthvalue(k).values  # ()
