"""paec.training.checkpoint: atomic folders, sidecar hashes, plain from_pretrained loading."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from paec.modeling.loader import tiny_model
from paec.training.checkpoint import (
    latest_checkpoint,
    load_training_state,
    read_sidecar,
    save_checkpoint,
    verify_checkpoint,
)


def test_checkpoint_round_trip(tmp_path: Path, smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32)
    state = {"step": 3, "anchor": {"anchor": 1.5}, "rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path, 3, model=model, tokenizer=smollm2_tokenizer, state=state,
                           metrics={"reward/mean": 0.25})
    assert path.name == "checkpoint-000003" and latest_checkpoint(tmp_path) == path
    side = read_sidecar(path)
    assert side["step"] == 3 and side["metrics"] == {"reward/mean": 0.25}
    assert "model.safetensors" in side["files"] and "training_state.pt" in side["files"]
    assert verify_checkpoint(path) == []
    loaded = load_training_state(path)
    assert loaded["step"] == 3 and torch.equal(loaded["rng"], state["rng"])
    again = AutoModelForCausalLM.from_pretrained(path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_tampering_is_detected(tmp_path: Path, smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32)
    path = save_checkpoint(tmp_path, 1, model=model, tokenizer=smollm2_tokenizer,
                           state={"step": 1}, metrics={})
    with (path / "model.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    assert verify_checkpoint(path) == ["model.safetensors"]


def test_a_half_written_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / ".tmp-checkpoint-000009-123").mkdir()
    (tmp_path / "checkpoint-000009").mkdir()  # no sidecar: a crash before the rename finished
    assert latest_checkpoint(tmp_path) is None
