"""The worker's checkpoint registration (DatabaseCallback.on_checkpoint) with the real trainer
on a tiny model and a real Postgres, without a worker process: each checkpoint is stored as a
full-state archive (what resume fetches) and a model-only one in the dtype the job trained
in; a LoRA job's model-only archive holds the merged weights, which plain transformers loads
and which answer as the adapter model does, and the model being trained keeps its adapter."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoModelForCausalLM

from paec.config.calibration import PAECConfig
from paec.config.training import TrainConfig
from paec.training.trainer import Trainer
from store import runs
from store.checkpoints import fetch_checkpoint
from store.db import transaction
from store.models import Checkpoint
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_job, migrated_sessions, new_tenant_key
from worker.runner import Context, DatabaseCallback

FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
IDS = torch.tensor([[1, 5, 9, 42, 7, 3]])


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with migrated_sessions("paec_ckpt_archives") as made:
        yield made


def train_job(sessions: sessionmaker[Session], tmp_path: Path, tiny_dir: Path,
              **train: Any) -> tuple[LocalStorage, Checkpoint, Trainer]:
    """A claimed job trained one step by the real trainer with the worker's callback; returns
    the storage, the job's checkpoint row and the trainer."""
    tenant_id, _ = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id, total_steps=1,
                      config={"steps": 1, "dtype": train.get("dtype", "float32")})
    storage = LocalStorage(tmp_path / "artifacts")
    ctx = Context(settings=Settings(data_dir=tmp_path), sessions=sessions, storage=storage,
                  worker_id="w")
    with transaction(sessions) as session:
        job = runs.claim_job(session, job_id, "w")
    assert job is not None
    cfg = TrainConfig(model=str(tiny_dir), train_data="builtin:add", train_size=8,
                      grader=FUZZY, output_dir=str(tmp_path / "run"), steps=1,
                      prompts_per_step=2, group_size=2, max_new_tokens=6, micro_batch_size=4,
                      learning_rate=1e-2, seed=0, device="cpu",
                      paec=PAECConfig(anchor_steps=1, floor_ratio=1.0), **train)
    trainer = Trainer(cfg, [DatabaseCallback(ctx, job)])
    assert trainer.train().status == "completed"
    with sessions() as session:
        row = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).one()
    return storage, row, trainer


def model_archive(storage: LocalStorage, row: Checkpoint, target: Path) -> Path:
    assert row.model_storage_key is not None
    with tarfile.open(fileobj=io.BytesIO(storage.path(row.model_storage_key).read_bytes())
                      ) as tar:
        tar.extractall(target, filter="data")
    return target


def test_a_job_s_checkpoint_has_a_model_only_archive_in_its_dtype_and_a_full_one_to_resume(
        sessions: sessionmaker[Session], tmp_path: Path, tiny_dir: Path) -> None:
    storage, row, trainer = train_job(sessions, tmp_path, tiny_dir, dtype="bfloat16")
    folder = model_archive(storage, row, tmp_path / "model")
    assert not (folder / "training_state.pt").exists()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    trained = trainer.model.state_dict()
    assert all(torch.equal(p, trained[n]) for n, p in model.state_dict().items())
    resume = fetch_checkpoint(storage, row, tmp_path / "resume")
    assert (resume / "training_state.pt").is_file()
    assert (row.model_size or 0) < row.size


# peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
# model: a warning about peft's code, not ours.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_a_lora_job_s_model_only_archive_is_the_merged_model(
        sessions: sessionmaker[Session], tmp_path: Path, tiny_dir: Path) -> None:
    storage, row, trainer = train_job(sessions, tmp_path, tiny_dir, lora_rank=4,
                                      lora_alpha=16.0)
    adapter = trainer.model.eval()
    resume = fetch_checkpoint(storage, row, tmp_path / "resume")
    assert (resume / "adapter_config.json").is_file()  # resume still gets the adapter
    folder = model_archive(storage, row, tmp_path / "model")
    assert not any(p.name.startswith("adapter_") for p in folder.iterdir())
    merged = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        expected = adapter(input_ids=IDS).logits  # (1, T, V)
        got = merged(input_ids=IDS).logits  # (1, T, V)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir)(input_ids=IDS).logits  # (1, T, V)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (base - expected).abs().max() > 1e-4  # the step moved the adapter: not vacuous
    # The trained model still carries its adapter, on an untouched base.
    names = [n for n, _ in adapter.named_parameters()]
    assert any("lora_A" in n for n in names)
    original = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    base_weights = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
                    for n, p in adapter.state_dict().items() if "lora_" not in n}
    assert all(torch.equal(base_weights[n], p) for n, p in original.items())
