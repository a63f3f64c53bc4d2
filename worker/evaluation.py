"""Run an evaluation row: a model (built-in, local, or a tenant's checkpoint) on datasets,
k samples per problem; avg@k, pass@k and maj@k per dataset (paec.grading.evaluation), stored on the
row. Answers are compared with the row's `answer` by mathematical equivalence, as the
trainer's own evaluation does.

Problems are sampled in batches (`BATCH_PROBLEMS`), and between batches the worker reads the
evaluation's status: a cancel (or a claim lost to the sweeper) stops it within one batch and
frees the worker for the next task. Each batch is progress for the
heartbeat's stall clock (item 13a). A batch's sampling seeds follow its position within the
batch, so the same request gives the same results.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select

from paec.config.training import TrainConfig
from paec.data import load_examples
from paec.training.trainer import Trainer
from store.db import transaction
from store.evaluations import (
    EvaluationStatus,
    claim_evaluation,
    evaluation_status,
    fail_evaluation,
    finish_evaluation,
)
from store.files import copy_file_to
from store.model_names import ModelKind, resolve_model_name
from store.models import Checkpoint, Evaluation
from store.runs import evaluation_heartbeat
from worker.runner import Context, Heartbeat, checkpoint_model, classify

log = logging.getLogger("paec.worker")

BATCH_PROBLEMS = 8
"""Problems sampled between two reads of the evaluation's status (k samples each)."""


class _Stopped(Exception):
    """The evaluation was cancelled, or its claim lost, while it ran."""


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

    def stalled(seconds: float) -> None:
        log.error("evaluation %s: no progress for %.0f s; given up for the sweeper to "
                  "re-queue", evaluation_id, seconds)

    heartbeat = Heartbeat(beat, ctx.settings.heartbeat_interval_s,
                          stall_timeout=ctx.settings.stall_timeout_s, on_stall=stalled)
    try:
        with heartbeat:
            return _run(ctx, evaluation, workdir, heartbeat)
    except _Stopped as stop:
        log.info("evaluation %s stopped: %s", evaluation_id, stop)
        return str(stop)
    except Exception as exc:
        failure = classify(exc)
        log.exception("evaluation %s failed", evaluation_id)
        with transaction(ctx.sessions) as session:
            failed = fail_evaluation(session, evaluation.id,
                                     getattr(failure, "code", "internal_error"),
                                     str(getattr(failure, "message", failure)),
                                     worker_id=ctx.worker_id)
        return "failed" if failed else "not ours (cancelled or re-queued meanwhile)"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # dataset copies; results are in the row


def _check(ctx: Context, evaluation_id: str, heartbeat: Heartbeat) -> None:
    """Raise _Stopped unless this worker still holds the evaluation, it is running, and its
    heartbeat has not given it up after a stall (the sweeper re-queues it)."""
    if heartbeat.stalled:
        raise _Stopped("given up after a stall; the sweeper re-queues it")
    with transaction(ctx.sessions) as session:
        status = evaluation_status(session, evaluation_id, ctx.worker_id)
    if status is None or status == EvaluationStatus.CANCELLED:
        raise _Stopped("cancelled" if status is not None else
                       "not ours (cancelled or re-queued meanwhile)")


def _run(ctx: Context, evaluation: Evaluation, workdir: Path, heartbeat: Heartbeat) -> str:
    """Sample and score every dataset with one model load, a batch of problems at a time,
    stopping at a cancel; store the results."""
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
        _check(ctx, evaluation.id, heartbeat)
        if trainer is None:
            trainer = Trainer(cfg)
            examples = trainer.val_examples
        else:  # one model load for every dataset
            examples = load_examples(data, size=cfg.validation_size, seed=cfg.seed + 1)
        # avg@k, pass@k and maj@k are means over problems: a batch's means, weighted by its
        # size, add up to the whole's.
        sums: dict[str, float] = {}
        for start in range(0, len(examples), BATCH_PROBLEMS):
            _check(ctx, evaluation.id, heartbeat)
            batch = examples[start:start + BATCH_PROBLEMS]
            for key, value in trainer.evaluate(batch).items():
                sums[key] = sums.get(key, 0.0) + value * len(batch)
            heartbeat.progress()
        metrics = {k.removeprefix("eval/"): v / len(examples) for k, v in sums.items()}
        results[name] = {**metrics, "n": float(len(examples))}
    with transaction(ctx.sessions) as session:
        done = finish_evaluation(session, evaluation.id, results, worker_id=ctx.worker_id)
    return "succeeded" if done else "not ours (cancelled or re-queued meanwhile)"
