"""paec.calibration.features and paec.calibration.scores on CUDA give what they give on the CPU.

Needs a GPU: `pytest -m gpu`."""

from __future__ import annotations

import pytest
import torch

from paec.calibration.features import token_features
from paec.calibration.scores import entropy, token_scores, top_p_entropy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_features_match_cpu(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(300, 151_936, generator=g) * 2).to(dtype)
    logits[:, :4] += torch.tensor([14.0, 11.0, 9.0, 6.0]).to(dtype)
    cpu = token_features(logits, 0.9)
    gpu = token_features(logits.cuda(), 0.9)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.top_p_entropy.cpu(), cpu.top_p_entropy, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu.nucleus_size.cpu(), cpu.nucleus_size)
    torch.testing.assert_close(gpu.top2_gap.cpu(), cpu.top2_gap)


def test_cuda_gradients_match_cpu() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 4099, generator=g) * 3
    sizes = token_features(logits, 0.9).nucleus_size
    grads = []
    for device in ("cpu", "cuda"):
        x = logits.to(device).requires_grad_()
        (entropy(x).sum() + top_p_entropy(x, sizes).sum()).backward()
        assert x.grad is not None
        grads.append(x.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_cuda_token_scores_match_cpu() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 9, 49_152, generator=g) * torch.tensor([0.05, 1.0, 3.0, 8.0])[
        :, None, None]  # (B, T + 1, V) flat (mask path) to peaked (top-k path) rows
    tokens = torch.randint(0, 49_152, (4, 8), generator=g)
    mask = torch.arange(8)[None, :] < torch.tensor([8, 5, 3, 1])[:, None]  # (B, T)
    f = token_features(logits[:, :8][mask] / 0.8, 0.9)
    out = []
    for device in ("cpu", "cuda"):
        x = logits.to(device).requires_grad_()
        s = token_scores(x, tokens.to(device), mask.to(device), temperature=0.8, entropy=True,
                         nucleus_size=f.nucleus_size.to(device),
                         nucleus_min_logit=f.nucleus_min_logit.to(device))
        assert s.entropy is not None and s.top_p_entropy is not None
        (s.logp.sum() + s.entropy.sum() + s.top_p_entropy.sum()).backward()
        assert x.grad is not None
        out.append((s.logp.detach().cpu(), s.top_p_entropy.detach().cpu(), x.grad.cpu()))
    for cpu, gpu in zip(out[0], out[1], strict=True):
        torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
