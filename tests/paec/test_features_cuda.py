"""paec.features on CUDA gives what it gives on the CPU. Needs a GPU: `pytest -m gpu`."""

from __future__ import annotations

import pytest
import torch

from paec.features import entropy, token_features, top_p_entropy

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
