"""Shared fixtures. The hub is never contacted: HF_HUB_OFFLINE is set before anything imports
huggingface_hub, and the built-in model is converted at most once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from paec.models import resolve_model

SMOLLM2 = "builtin:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the converted built-in; the one real conversion of the session."""
    cache = tmp_path_factory.mktemp("paec-cache")
    resolve_model(SMOLLM2, cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache: Path) -> Path:
    """The converted SmolLM2 folder (Hugging Face format)."""
    return smollm2_cache / "models" / SMOLLM2.removeprefix("builtin:")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    """The real SmolLM2 tokenizer, shared: tests that change it must load their own."""
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(smollm2_dir)
    return tokenizer
