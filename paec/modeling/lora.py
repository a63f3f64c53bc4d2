"""LoRA through PEFT (the optional `lora` extra): wrap a model with trainable low-rank adapters,
load the adapter a checkpoint saved on top of its base model, or merge it into the base.

A LoRA checkpoint holds only the adapter (adapter_model.safetensors, adapter_config.json);
`AutoModelForCausalLM.from_pretrained(folder)` loads it on its base when peft is installed.
`merge_lora_checkpoint` writes the merged model, which plain transformers loads (the
service's model-only download of a LoRA job, issue 19).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paec.modeling.loader import resolve_model

ADAPTER_CONFIG = "adapter_config.json"


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # the extra is optional: say how to get it
        raise ImportError("LoRA needs peft: pip install 'paec[lora]' (or pip install peft)"
                          ) from exc
    return peft


def add_lora(model: Any, *, rank: int, alpha: float, dropout: float,
             target_modules: list[str] | None) -> Any:
    """`model` with fresh LoRA adapters (B = 0, so the output is unchanged) on
    `target_modules` (None: every linear layer but the output head); only they train."""
    peft = _peft()
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=target_modules or "all-linear",
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def load_lora(base: Any, folder: Path) -> Any:
    """The base model with the trainable adapter saved in `folder`."""
    return _peft().PeftModel.from_pretrained(base, str(folder), is_trainable=True)


def is_lora_checkpoint(folder: Path) -> bool:
    """Whether a checkpoint folder holds a LoRA adapter rather than full weights."""
    return (folder / ADAPTER_CONFIG).is_file()


def merge_lora_checkpoint(folder: Path, target: Path, *, dtype: torch.dtype,
                          base: str | None = None) -> Path:
    """Write into `target` the full model of the LoRA checkpoint `folder` and return it: the
    base model (`base`, default the adapter's `base_model_name_or_path`) loaded afresh on the
    CPU in `dtype` (the dtype it trained in), the adapter merged into its weights (peft's
    `merge_and_unload`: W + (alpha / r) B A), saved with its config and generation config,
    and the checkpoint's tokenizer. A copy made for this: the model being trained is never
    touched. The folder loads with plain `AutoModelForCausalLM.from_pretrained`, no peft."""
    peft = _peft()
    if base is None:
        base = str(json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])
    model: Any = AutoModelForCausalLM.from_pretrained(str(resolve_model(base)), dtype=dtype)
    merged: Any = peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if merged.generation_config.pad_token_id is None:  # as the trainer's own loader sets it
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target
