"""Run an evaluation row: a model (built-in, local, or a tenant's checkpoint) on datasets,
k samples per problem; avg@k, pass@k and maj@k per dataset (paec.evaluation), stored on the
row. Answers are compared with the row's `answer` by mathematical equivalence, as the
trainer's own evaluation does."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select

from paec.data import load_examples
from paec.train_config import TrainConfig
from paec.trainer import Trainer
from store.db import transaction
from store.evaluations import claim_evaluation, fail_evaluation, finish_evaluation
from store.files import copy_file_to
from store.model_names import ModelKind, resolve_model_name
from store.models import Checkpoint, Evaluation
from store.runs import evaluation_heartbeat
from worker.runner import Context, Heartbeat, checkpoint_model, classify

log = logging.getLogger("paec.worker")


def run_evaluation(ctx: Context, evaluation_id: str) -> str:
    """Claim and run one evaluation; returns what happened."""
    with transaction(ctx.sessions) as session:
        evaluation = claim_evaluation(session, evaluation_id, ctx.worker_id)
    if evaluation is None:
        return "not claimed"
    workdir = ctx.settings.resolved_worker_dir / "evaluations" / evaluation.id
    workdir.mkdir(parents=True, exist_ok=True)

    def beat() -> None:
        with transaction(ctx.sessions) as session:
            evaluation_heartbeat(session, evaluation_id, ctx.worker_id)

    try:
        with Heartbeat(beat, ctx.settings.heartbeat_interval_s):
            return _run(ctx, evaluation, workdir)
    except Exception as exc:
        failure = classify(exc)
        log.exception("evaluation %s failed", evaluation_id)
        with transaction(ctx.sessions) as session:
            fail_evaluation(session, evaluation.id, getattr(failure, "code", "internal_error"),
                            str(getattr(failure, "message", failure)))
        return "failed"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # dataset copies; results are in the row


def _run(ctx: Context, evaluation: Evaluation, workdir: Path) -> str:
    """Sample and score every dataset with one model load; store the results."""
    with transaction(ctx.sessions) as session:
        model = resolve_model_name(session, ctx.settings, evaluation.tenant_id,
                                   evaluation.model)
        sources: list[tuple[str, str]] = []
        for i, name in enumerate(evaluation.datasets):
            if str(name).startswith("builtin:"):
                sources.append((name, name))
                continue
            path = workdir / f"dataset-{i}.jsonl"
            copy_file_to(session, ctx.storage, evaluation.tenant_id, name, path)
            sources.append((name, str(path)))
        ckpt = (session.scalar(select(Checkpoint).where(Checkpoint.id == model.source))
                if model.kind is ModelKind.CHECKPOINT else None)
    source = model.source if ckpt is None else str(checkpoint_model(ctx, ckpt,
                                                                     evaluation.model))
    s = dict(evaluation.settings)
    results: dict[str, dict[str, float]] = {}
    trainer = None
    for name, data in sources:
        cfg = TrainConfig(model=source, train_data=data, validation_data=data,
                          train_size=int(s.get("size", 64)),
                          validation_size=int(s.get("size", 64)), eval_k=evaluation.k,
                          max_new_tokens=int(s.get("max_new_tokens", 64)),
                          temperature=float(s.get("temperature", 1.0)),
                          top_p=float(s.get("top_p", 1.0)), seed=int(s.get("seed", 0)),
                          device=ctx.settings.worker_device, steps=1, use_paec=False,
                          output_dir=str(Path(workdir) / "run"))
        if trainer is None:
            trainer = Trainer(cfg)
            examples = trainer.val_examples
        else:  # one model load for every dataset
            examples = load_examples(data, size=cfg.validation_size, seed=cfg.seed + 1)
        metrics = trainer.evaluate(examples)
        metrics["n"] = float(len(examples))
        results[name] = {k.removeprefix("eval/"): v for k, v in metrics.items()}
    with transaction(ctx.sessions) as session:
        finish_evaluation(session, evaluation.id, results)
    return "succeeded"
