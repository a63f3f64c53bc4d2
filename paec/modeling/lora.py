"""LoRA through PEFT (the optional `lora` extra): wrap a model with trainable low-rank adapters,
or load the adapter a checkpoint saved on top of its base model.

A LoRA checkpoint holds only the adapter (adapter_model.safetensors, adapter_config.json);
`AutoModelForCausalLM.from_pretrained(folder)` loads it on its base when peft is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
