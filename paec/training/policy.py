"""The policy the trainer optimises: the base model or a resumed checkpoint, with gradient
checkpointing and LoRA adapters as the config asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paec.config.training import TrainConfig
from paec.modeling.loader import load_model_and_tokenizer
from paec.modeling.lora import add_lora, load_lora


def model_dtype(cfg: TrainConfig) -> torch.dtype:
    """The parameters' dtype."""
    return torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32


def load_policy(cfg: TrainConfig, device: torch.device,
                resume_from: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in training mode. A full checkpoint is the model itself; a LoRA one
    is an adapter on the base model. Seeds torch with `cfg.seed` first, so that the LoRA
    initialisation is the same on every rank and every run."""
    lora = cfg.lora_rank > 0
    source = str(resume_from) if resume_from is not None and not lora else cfg.model
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(source, dtype=model_dtype(cfg), device=device)
    if cfg.gradient_checkpointing:
        # transformers 5 renamed it (the old name warns); 4.x only has the old one.
        enable = (getattr(model, "activation_checkpointing_enable", None)
                  or model.gradient_checkpointing_enable)
        enable()
    if lora and resume_from is not None:
        model = load_lora(model, resume_from)
    elif lora:
        model = add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                         dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules)
    model.train()
    return model, tokenizer
