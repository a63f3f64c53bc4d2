"""Fixtures of the trainer's tests: a tiny real transformers model with the real SmolLM2
tokenizer, shared by the session (test_trainer.py builds its own, the same)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from paec.modeling.loader import tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory,
             smollm2_tokenizer: PreTrainedTokenizerBase) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model(smollm2_tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder
