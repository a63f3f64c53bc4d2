"""The PAEC RLVR trainer: sample, grade, group-normalise, then a clipped policy-gradient update
with PAEC's entropy calibration (or any baseline of `paec.training.losses`).

One training step:
  1. P prompts from the data cursor; G completions each, from the rollout engine
     (`paec.training.engines`: the native sampler, or vLLM), with every sampled position's
     entropy and PAEC features.
  2. Grade every completion (`paec.grading.graders`); group-normalised advantages; groups whose
     rewards are all equal carry no signal and are dropped from the optimisation batch.
  3. The optimisation batch, built once (`paec.training.batch.OptimBatch`): micro-batches,
     whole-batch normalisers, PAEC's global mask and H_bar (`PAECBatch`) from the features
     the sampler computed, the 80/20 threshold, and, from a no-grad pass where needed, old
     and reference log-probs (with vLLM, truncated importance weights too).
  4. mu epochs, each one optimiser step accumulated over micro-batches: the objective is the
     policy loss (`paec.training.losses.policy_loss`) + the PAEC term (`PAECBatch.loss`).
  5. The anchor observes H_bar; the engine gets the new weights; metrics go to the
     callbacks; checkpoints and evaluations.

On several processes (torchrun; `paec.training.distributed`) each samples and grades its
share of the prompts, the rollouts are gathered so that steps 2, 3 and 5 see the whole batch
on every rank, and step 4's micro-batches are shared out with gradients summed. Rank 0
alone calls the callbacks and writes checkpoints.

Outside code hooks in only through callbacks (`paec.training.callbacks.Callback`): the worker reads
metrics and asks the loop to stop (cancel, or pause with a checkpoint) between steps.

    python -m paec train config.json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.scores import token_scores
from paec.config.loss import PolicyLossType
from paec.config.training import TrainConfig
from paec.data import DataCursor, Example
from paec.formats import load_config_data
from paec.grading.evaluation import evaluate_groups
from paec.grading.graders import batch_metrics, build_grader
from paec.modeling.loader import load_model_and_tokenizer
from paec.training.advantages import group_advantages
from paec.training.baseline_inputs import (
    baseline_inputs,
    loss_entropy,
    needs_old_pass,
    needs_update_entropy,
    per_position,
)
from paec.training.batch import MicroBatch, OptimBatch, accumulate
from paec.training.callbacks import Callback, StopRequest
from paec.training.checkpoint import (
    checkpoint_dir,
    load_training_state,
    read_sidecar,
    save_checkpoint,
)
from paec.training.distributed import (
    full_state_dicts,
    full_value,
    join,
    load_full_optimizer_state,
    shard_model,
)
from paec.training.engines import Engine, Rollout, build_engine, importance_weights
from paec.training.entropy_control import EntropyController
from paec.training.losses import Metrics, aggregate, policy_loss
from paec.training.policy import load_policy, model_dtype
from paec.training.reporting import reporters
from paec.training.rollout import RolloutBatch, completion_logits, encode_prompts
from paec.training.schedule import lr_lambda
from paec.training.traces import token_traces


@dataclass
class TrainResult:
    """How a call to `Trainer.train` ended."""

    status: str  # "completed", "paused" or "cancelled"
    step: int  # the last finished step
    checkpoint: Path | None  # the last checkpoint written (final, or the pause checkpoint)
    history: list[dict[str, float]] = field(default_factory=list)  # metrics of each step


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Runs `TrainConfig` to the end, or until a callback asks it to stop. Under torchrun
    every rank builds one (only rank 0's callbacks are called); `close()` (or a `with`
    block) releases the rollout engine and the process group."""

    def __init__(self, cfg: TrainConfig, callbacks: list[Callback] | None = None,
                 resume_from: Path | None = None) -> None:
        self.cfg = cfg
        self.device, self.world = join(resolve_device(cfg.device), cfg.num_processes)
        self.callbacks = list(callbacks or []) if self.world.is_main else []
        self.output_dir = Path(cfg.output_dir)
        # Cheap checks first: a bad grader or dataset, or a `report_to` backend that is not
        # installed, fails before a model is loaded.
        if self.world.is_main:
            self.callbacks += reporters(cfg)
        self.grader = build_grader(cfg.grader, allow_python=cfg.allow_python_grader)
        self.train_examples, self.val_examples = load_config_data(cfg)
        self.model: Any
        self.model, self.tokenizer = load_policy(cfg, self.device, resume_from)
        # Every rank starts from rank 0's parameters (LoRA's random init included), as DDP.
        self.world.sync_parameters([p for p in self.model.parameters() if p.requires_grad])
        if cfg.fsdp:
            shard_model(self.model)  # before the optimiser: it holds the shards
        self.ref_model = None
        if cfg.loss.kl_coef > 0 and cfg.lora_rank == 0:  # LoRA's reference: the bare base
            self.ref_model, _ = load_model_and_tokenizer(cfg.model, dtype=model_dtype(cfg),
                                                         device=self.device)
            self.ref_model.requires_grad_(False)
        self.cursor = DataCursor(self.train_examples, seed=cfg.seed)
        self.anchor = AnchorState(cfg.paec.anchor_steps, cfg.paec.floor_ratio)
        self.controller = EntropyController(cfg.loss.entropic_kp, cfg.loss.entropic_ki,
                                            cfg.loss.entropic_target)  # EntroPIC
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate,
                                           betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
        total = cfg.steps * cfg.update_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, total))
        self.step = 0
        self.last_checkpoint: Path | None = None
        # Only several epochs, a KL term or EntroPIC need a separate no-grad pass (`_update`).
        self._needs_old_pass = (cfg.update_epochs > 1 or cfg.loss.kl_coef > 0
                                or needs_old_pass(cfg.loss))
        if resume_from is not None:
            self._load_state(resume_from)
        self.engine: Engine = build_engine(cfg, self.model, self.tokenizer, self.device,
                                           self.world)
        if resume_from is not None:
            self.engine.sync()  # the engine loaded the base model; the policy is resumed

    def close(self) -> None:
        """Release the rollout engine and leave the process group."""
        self.engine.close()
        self.world.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        """Train from the current step to `cfg.steps`; returns how it ended. Callbacks hear
        `on_train_begin` first and `on_train_end` however it ends ("failed": it raised)."""
        if self.world.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # The run's config beside its checkpoints: `python -m paec train <it> --resume
            # auto`.
            (self.output_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(),
                                                                    indent=2))
        for cb in self.callbacks:
            cb.on_train_begin(self.step)
        status = "failed"
        try:
            result = self._train()
            status = result.status
            return result
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self.step, status)

    def _train(self) -> TrainResult:
        cfg = self.cfg
        history: list[dict[str, float]] = []
        while self.step < cfg.steps:
            stop = self._stop_request()
            if stop is not None:
                return self._stop(stop, history)
            metrics, traces = self.train_step(self.step + 1)
            self.step += 1
            history.append(metrics)
            for cb in self.callbacks:
                cb.on_step_end(self.step, metrics, traces)
            last = self.step == cfg.steps
            if cfg.eval_interval and self.step % cfg.eval_interval == 0 and not last:
                self.evaluate()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last:
                self.save(metrics)
        if self.val_examples:
            self.evaluate()
        final = self.save(history[-1] if history else {})
        return TrainResult("completed", self.step, final, history)

    def train_step(self, step: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """One rollout batch and its update; returns (metrics, per-token traces)."""
        cfg, world = self.cfg, self.world
        t0 = time.perf_counter()
        examples = world.shard(self.cursor.next_batch(cfg.prompts_per_step))  # this rank's
        prompts = encode_prompts(self.tokenizer, [e.messages for e in examples], self.device)
        rollout = self.engine.sample(prompts, group_size=cfg.group_size,
                                     seed=_rank_seed(_step_seed(cfg.seed, step), world.rank),
                                     stats=True)
        t1 = time.perf_counter()
        texts = self._decode(rollout.batch)
        items = [e.item for e in examples for _ in range(cfg.group_size)]
        results = [r for part in world.gather_objects(self.grader.grade_many(texts, items))
                   for r in part]  # every rank's, in rank order
        metrics = batch_metrics(self.grader, results)
        rewards = torch.tensor([r.reward for r in results], dtype=torch.float32)  # (B,)
        rollout = rollout.gather(world, self.tokenizer.pad_token_id)  # the whole batch
        roll = rollout.batch
        t2 = time.perf_counter()

        advantages, flat = group_advantages(rewards, cfg.group_size,
                                            normalize_std=cfg.normalize_advantage_std)
        lengths = roll.completion_mask.sum(-1).float()  # (B,)
        metrics |= {
            "reward/accuracy": float((rewards >= 1.0).float().mean()),
            "completion/length_mean": float(lengths.mean()),
            "completion/length_max": float(lengths.max()),
            "completion/truncated_frac": float(1.0 - (
                (roll.completion_ids == self.tokenizer.eos_token_id) & roll.completion_mask
            ).any(-1).float().mean()),  # no EOS within max_new_tokens
            "groups/zero_variance": float(flat.sum()),
            "groups/zero_variance_frac": float(flat.float().mean()),
        }
        keep = ~flat.repeat_interleave(cfg.group_size)  # (B,)
        traces: list[dict[str, Any]] = []
        if bool(keep.any()):
            upd, traces = self._update(rollout.select(keep.to(roll.input_ids.device)),
                                       advantages[keep].to(self.device))
            metrics |= upd
            self.engine.sync()  # the next rollouts sample the updated policy
        else:
            metrics["train/skipped"] = 1.0  # no group had signal: nothing to learn from
        t3 = time.perf_counter()
        metrics |= {
            "train/step": float(step),
            "train/learning_rate": float(self.scheduler.get_last_lr()[0]),
            "time/sampling": t1 - t0, "time/grading": t2 - t1, "time/training": t3 - t2,
            "time/step": t3 - t0,
            "perf/tokens_per_second": float(lengths.sum()) / max(t3 - t0, 1e-9),
        }
        return metrics, traces

    # ------------------------------------------------------------------ the update

    def _update(self, rollout: Rollout, adv: Tensor) -> tuple[dict[str, float],
                                                              list[dict[str, Any]]]:
        """The update of one rollout batch and its `adv` (B,), from the statistics of every
        sampled position (`rollout.entropy` (B, T) and, with PAEC, `rollout.features`):
        `update_epochs` optimiser steps, each accumulated over the micro-batches (those
        this rank owns, gradients then summed over ranks)."""
        cfg, world = self.cfg, self.world
        roll = rollout.batch
        assert rollout.entropy is not None  # the engine sampled with stats
        out: dict[str, float] = {}
        weights = None
        if rollout.engine_logp is not None and rollout.trainer_logp is not None:
            weights, out = importance_weights(rollout.trainer_logp, rollout.engine_logp,
                                              roll.completion_mask, cfg.importance_cap)
        batch = OptimBatch.build(
            roll, adv, rollout.entropy, rollout.features, cfg=cfg, anchor=self.anchor,
            device=self.device, seed=_step_seed(cfg.seed, self.step + 1),
            old_pass=self._old_pass(scored=rollout.trainer_logp is not None),
            old_logp=rollout.trainer_logp, is_weights=weights, world=world,
            lockstep=cfg.fsdp)
        alpha = self._control_alpha(roll, rollout.entropy)
        sums: dict[str, float] = {}
        grad_norm = 0.0
        # The optimiser's own list: with fsdp, `model.parameters()` can name the root's
        # unsharded copies, which FSDP leaves registered after a no-grad forward.
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        mine = [mb for i, mb in enumerate(batch.micro) if world.owns(i)]
        # Sharded parameters make every pass a collective: every rank runs as many.
        passes = world.rounds(len(batch.micro)) if cfg.fsdp else len(mine)
        for _ in range(cfg.update_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for k in range(passes):
                mb = mine[k] if k < len(mine) else batch.micro[0]
                loss, metrics = self._objective(batch, mb, alpha)  # ()
                if k < len(mine):
                    accumulate(sums, metrics, mb.share, cfg.update_epochs)
                # FSDP averages the ranks' gradients: scaled by the ranks, they sum.
                scale = (world.size if cfg.fsdp else 1) * float(k < len(mine))
                (loss * scale).backward()  # type: ignore[no-untyped-call]
            if not cfg.fsdp:  # FSDP reduces the gradients itself (`shard_model`)
                world.sum_gradients(params)
            # With fsdp the norm is a sharded tensor (DTensor), summed over the shards.
            grad_norm = float(full_value(torch.nn.utils.clip_grad_norm_(params,
                                                                        cfg.max_grad_norm)))
            self.optimizer.step()
            self.scheduler.step()
        out |= batch.feature_metrics() | world.sum_floats(sums)
        if alpha is not None:
            out |= self.controller.metrics()
        out["train/grad_norm"] = grad_norm
        if batch.paec is not None and batch.paec.masked_entropy is not None:
            self.anchor.observe(batch.paec.masked_entropy)  # once per training step
        traces = (token_traces(batch, self.tokenizer, cfg.trace_samples)
                  if world.is_main else [])
        return out, traces

    def _objective(self, batch: OptimBatch, mb: MicroBatch,
                   alpha: float | None = None) -> tuple[Tensor, Metrics]:
        """The loss of micro-batch `mb` with gradient, the policy loss plus the PAEC term, and
        its metrics (detached 0-dim tensors); `alpha`: EntroPIC's controller output."""
        cfg = self.cfg
        mask = batch.mask[mb.rows]  # (b, T)
        nucleus = batch.nucleus(mb)  # (n,) fields, when the PAEC term has a gradient
        # Log-probs, and the entropies that take a gradient this step, in one pass over the
        # logits with one gradient (`paec.calibration.scores`).
        logits = completion_logits(self.model, batch.roll.select(mb.rows))  # (b, T + 1, V)
        scores = token_scores(  # logp (b, T); entropies (n,) when asked for
            logits, batch.ids[mb.rows], mask, temperature=cfg.temperature,
            entropy=cfg.loss.entropy_coef > 0 or needs_update_entropy(cfg.loss),
            nucleus_size=None if nucleus is None else nucleus.nucleus_size,
            nucleus_min_logit=None if nucleus is None else nucleus.nucleus_min_logit)
        logp = scores.logp  # (b, T)
        loss, metrics = policy_loss(  # ()
            logp, logp.detach() if batch.old_logp is None else batch.old_logp[mb.rows],
            batch.advantages[mb.rows], mask, cfg.loss,
            entropy=loss_entropy(cfg.loss, batch, mb, scores.entropy),
            ref_logp=None if batch.ref_logp is None else batch.ref_logp[mb.rows],
            generator=batch.generator, entropy_threshold=batch.entropy_threshold,
            total_tokens=batch.total_tokens, total_seqs=batch.total_seqs, max_len=batch.max_len,
            extra=baseline_inputs(cfg.loss, batch, mb, logits, entropy=scores.entropy,
                                  temperature=cfg.temperature, alpha=alpha),
            is_weights=None if batch.is_weights is None else batch.is_weights[mb.rows])
        if batch.paec is not None:
            term, paec_metrics = batch.paec.loss(scores.top_p_entropy, mb.tokens)  # ()
            loss = loss + term  # ()
            metrics |= paec_metrics | {"loss/total": loss.detach()}
        return loss, metrics

    def _old_pass(self, *, scored: bool) -> Callable[[RolloutBatch], Any] | None:
        """The no-grad pass over the pre-update policy where it is needed (`_needs_old_pass`),
        unless the vllm scoring pass (`scored`) already gave its log-probs and neither a KL
        term nor ERC asks for more; None: the old log-probs are the update's own, detached
        (ratios exactly 1, as in TRL)."""
        loss = self.cfg.loss
        skip = scored and loss.kl_coef == 0 and not needs_update_entropy(loss)
        return self._old_log_probs if self._needs_old_pass and not skip else None

    def _old_log_probs(self, roll: RolloutBatch) -> tuple[Tensor, Tensor | None,
                                                          Tensor | None]:
        """Log-probs (b, T) of a sub-batch's sampled tokens under the pre-update policy, with a
        KL term under the reference (else None), and with ERC the pre-update policy's full
        entropy (b, T) (else None); the caller disables autograd."""
        cfg = self.cfg
        ids, mask = roll.completion_ids, roll.completion_mask  # (b, T), (b, T)
        old = token_scores(completion_logits(self.model, roll), ids, mask,
                           temperature=cfg.temperature, entropy=needs_update_entropy(cfg.loss))
        entropy = None if old.entropy is None else per_position(old.entropy, mask)  # (b, T)
        if cfg.loss.kl_coef == 0:
            return old.logp, None, entropy
        ref = token_scores(self._ref_logits(roll), ids, mask,
                           temperature=cfg.temperature).logp  # (b, T)
        return old.logp, ref, entropy

    def _control_alpha(self, roll: RolloutBatch, entropy_bt: Tensor) -> float | None:
        """EntroPIC: the controller's alpha for this update, from the batch's entropy under
        the pre-update policy (the sampler's `entropy_bt` (B, T), aggregated as the loss
        is, as their `agg_loss(entropy, ...)`); None for the other losses."""
        cfg = self.cfg
        if cfg.loss.loss_type is not PolicyLossType.ENTROPIC:
            return None
        entropy = aggregate(entropy_bt, roll.completion_mask.to(entropy_bt.device),
                            cfg.loss.aggregation, max_len=cfg.max_new_tokens)  # ()
        return self.controller.update(float(entropy))

    def _ref_logits(self, roll: RolloutBatch) -> Tensor:
        """(B, T + 1, V) raw logits of the reference policy: the frozen initial model, or with
        LoRA the base model with its adapters switched off (no second copy in memory)."""
        if self.ref_model is not None:
            return completion_logits(self.ref_model, roll)
        with self.model.disable_adapter():
            return completion_logits(self.model, roll)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, examples: list[Example] | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """avg@k, pass@k and maj@k on the validation set (or `examples`); `progress(done,
        total)` is called with the problems done after each batch of them (on rank 0, which
        counts its own batches times the number of ranks)."""
        cfg, world = self.cfg, self.world
        examples = self.val_examples if examples is None else examples
        per_call = max(1, cfg.micro_batch_size // cfg.eval_k)
        starts = range(0, len(examples), per_call)
        owned = [start for i, start in enumerate(starts) if world.owns(i)]
        passes = world.rounds(len(starts)) if cfg.fsdp else len(owned)
        mine: dict[int, list[tuple[list[str], str]]] = {}
        for k in range(passes):
            start = owned[k] if k < len(owned) else starts[0]  # else: collectives only
            chunk = examples[start:start + per_call]
            prompts = encode_prompts(self.tokenizer, [e.messages for e in chunk], self.device)
            roll = self.engine.sample(prompts, group_size=cfg.eval_k,
                                      seed=_step_seed(cfg.seed + 7, start), stats=False).batch
            if k >= len(owned):
                continue
            texts = self._decode(roll)
            mine[start] = [(texts[j * cfg.eval_k:(j + 1) * cfg.eval_k], str(ex.item["answer"]))
                           for j, ex in enumerate(chunk)]
            if progress is not None:
                progress(min(len(examples), (len(mine) * world.size) * per_call),
                         len(examples))
        everyone = {k: v for part in world.gather_objects(mine) for k, v in part.items()}
        groups = [g for start in starts for g in everyone[start]]
        metrics = evaluate_groups(groups, cfg.eval_k)
        for cb in self.callbacks:
            cb.on_eval(self.step, metrics)
        return metrics

    # ------------------------------------------------------------------ state

    def save(self, metrics: dict[str, float]) -> Path:
        """A full checkpoint of the current step."""
        weights, optimizer = (full_state_dicts(self.model, self.optimizer) if self.cfg.fsdp
                              else (None, self.optimizer.state_dict()))
        state = {
            "step": self.step,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "cursor": self.cursor.state_dict(),
            "anchor": self.anchor.state_dict(),
            "entropic": self.controller.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        path = checkpoint_dir(self.output_dir, self.step)
        if self.world.is_main:  # the ranks' states are identical: one writes it
            path = save_checkpoint(self.output_dir, self.step, model=self.model,
                                   tokenizer=self.tokenizer, state=state, metrics=metrics,
                                   weights=weights)
        self.world.barrier()  # written before any rank moves on (or stops)
        self.last_checkpoint = path
        for cb in self.callbacks:
            cb.on_checkpoint(self.step, path, read_sidecar(path))
        return path

    def _load_state(self, path: Path) -> None:
        state = load_training_state(path, self.device)
        self.step = int(state["step"])
        if self.cfg.fsdp:
            load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.cursor.load_state_dict(state["cursor"])
        self.anchor.load_state_dict(state["anchor"])
        if "entropic" in state:  # checkpoints from before EntroPIC have none: a fresh one
            self.controller.load_state_dict(state["entropic"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.last_checkpoint = path

    def _stop_request(self) -> StopRequest | None:
        """The first callback's stop request (rank 0 asks; every rank gets its answer)."""
        request = None
        for cb in self.callbacks:
            request = cb.should_stop()
            if request is not None:
                break
        return self.world.broadcast(request)

    def _stop(self, request: StopRequest, history: list[dict[str, float]]) -> TrainResult:
        if request is StopRequest.PAUSE:
            path = self.save(history[-1] if history else {})
            return TrainResult("paused", self.step, path, history)
        return TrainResult("cancelled", self.step, self.last_checkpoint, history)

    def _decode(self, roll: RolloutBatch) -> list[str]:
        ids = roll.completion_ids.masked_fill(~roll.completion_mask, self.tokenizer.pad_token_id)
        texts: list[str] = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts


def _step_seed(seed: int, step: int) -> int:
    """A per-step seed: a step samples the same whatever ran before it (exact resume)."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


def _rank_seed(seed: int, rank: int) -> int:
    """Rank `rank`'s sampling seed of a step: rank 0 keeps the step's seed (one process runs
    as before), the others draw their own streams."""
    return (seed + rank * 104_729) % (2**31 - 1)
