"""paec.modeling.lora's merge: a LoRA checkpoint (an adapter on its base) becomes one model
folder that plain transformers loads, with the adapter model's outputs, in the dtype it
trained in, and the adapter model it came from is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from paec.modeling.lora import add_lora, is_lora_checkpoint, merge_lora_checkpoint

# peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
# model: a warning about peft's code, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

IDS = torch.tensor([[1, 5, 9, 42, 7, 3], [2, 8, 8, 100, 64, 11]])


def lora_checkpoint(tiny_dir: Path, folder: Path, dtype: torch.dtype) -> Any:
    """The tiny model with adapters whose B is random (fresh ones are 0: merging them would
    change nothing), saved as the trainer saves a LoRA checkpoint; returns the model."""
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=dtype)
    model = add_lora(base, rank=4, alpha=8.0, dropout=0.0, target_modules=None)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    return model


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=IDS).logits  # (B, T, V)
    return out.float()


def test_the_merged_model_loads_with_plain_transformers_and_gives_the_adapter_s_logits(
        tiny_dir: Path, tmp_path: Path) -> None:
    adapter = lora_checkpoint(tiny_dir, tmp_path / "ckpt", torch.float32)
    assert is_lora_checkpoint(tmp_path / "ckpt")
    before = {n: p.detach().clone() for n, p in adapter.state_dict().items()}
    expected = logits(adapter)  # (B, T, V)

    out = merge_lora_checkpoint(tmp_path / "ckpt", tmp_path / "merged", dtype=torch.float32)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors",
            "tokenizer.json"} <= names
    assert not any(name.startswith("adapter_") for name in names)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), expected, rtol=1e-4, atol=1e-4)
    # Not vacuous: the adapter changes the base's outputs, which the merge carried over.
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    assert (logits(base) - expected).abs().max() > 1e-2
    # The adapter model it came from (the trainer's) is untouched and still an adapter.
    after = adapter.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], v) for n, v in before.items())
    torch.testing.assert_close(logits(adapter), expected, rtol=0, atol=0)


def test_the_merged_weights_keep_the_dtype_the_model_trained_in(tiny_dir: Path,
                                                                tmp_path: Path) -> None:
    adapter = lora_checkpoint(tiny_dir, tmp_path / "ckpt", torch.bfloat16)
    out = merge_lora_checkpoint(tmp_path / "ckpt", tmp_path / "merged", dtype=torch.bfloat16)
    with safe_open(str(out / "model.safetensors"), framework="pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    merged = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert merged.dtype == torch.bfloat16
    torch.testing.assert_close(logits(merged), logits(adapter), rtol=0.05, atol=0.05)
