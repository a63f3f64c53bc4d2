"""The demo's steps, at a tiny size so that they cannot rot: a tiny model instead of SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from paec.demo import main
from paec.models import tiny_model


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_model(
    tmp_path: Path, smollm2_tokenizer: PreTrainedTokenizerBase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "tiny"
    tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    assert main(["--model", str(folder), "--steps", "2", "--output-dir",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for marker in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "sha256 verified", "eval/maj@4"):
        assert marker in out, marker
    assert (tmp_path / "out" / "checkpoint-000002" / "model.safetensors").is_file()
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) >= 2
