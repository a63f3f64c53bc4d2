"""`make demo`'s script, end to end at a small size so that it cannot rot: the real API and
worker processes on the embedded default (SQLite, server-free broker), a tiny model from an
operator models directory instead of SmolLM2, three steps; the checkpoint it downloads is
the model-only archive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from paec.modeling.loader import tiny_model
from tests.service import ROOT


def test_the_demo_runs_a_job_over_http_on_the_embedded_default(
        tmp_path: Path, smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    models = tmp_path / "models"
    tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32, n_head=2).save_pretrained(models / "tiny")
    smollm2_tokenizer.save_pretrained(models / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAEC_")}
    out = subprocess.run(
        [sys.executable, "-m", "client.demo", "--model", "local:tiny", "--models-dir",
         str(models), "--steps", "3", "--k", "2", "--data-dir", str(tmp_path / "demo"),
         "--hyperparameters",
         '{"max_new_tokens": 8, "group_size": 2, "batch_size": 2, "micro_batch_size": 4}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    text = out.stdout
    for seen in ("== Start the service on its embedded default", "64 rows  processed",
                 "[########################] 3/3", "The job has successfully completed",
                 "sha256 verified", "AutoModelForCausalLM.from_pretrained ->",
                 "== Before vs after"):
        assert seen in text, text[-3000:]
    # It downloaded the model-only archive, not the one with the training state (issue 19).
    # (How much smaller it is depends on the optimiser's state: tests/api/test_checkpoints.py;
    # three steps of an untrained tiny model may leave it nearly empty.)
    sizes = re.search(r"model-only archive ([0-9.]+) MB \(the full-state one, to resume "
                      r"from, is ([0-9.]+) MB\), sha256 verified", text)
    assert sizes is not None, text[-3000:]
    assert float(sizes.group(1)) <= float(sizes.group(2))
    model = tmp_path / "demo" / "model"
    assert (model / "model.safetensors").is_file() and not (model / "training_state.pt").exists()
    assert json.loads((model / "checkpoint.json").read_text())["contents"] == "model"
    # it stopped everything it started: no process still holds its data folder's database
    lsof = subprocess.run(["fuser", str(tmp_path / "demo" / "paec.db")], capture_output=True)
    assert lsof.stdout.strip() == b""
