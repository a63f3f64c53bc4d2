"""Rollout engines: what samples a step's completions, behind one interface.

    native  the trainer's own KV-cache sampler (`paec.training.rollout.sample`) on its own
            model; the statistics of every sampled position (full entropy, PAEC's features)
            come from the sampling pass's logits, for free.
    vllm    vLLM in its own process and virtualenv (`paec.engines.vllm`), colocated with the
            trainer. It returns the sampled tokens with their log-probs only, so a no-grad
            pass of the trainer over the sampled tokens (`score`) gives the statistics and
            the trainer's log-probs; the engine's weights are replaced after every update
            (`sync`: full models and LoRA adapters merged on the fly).

The engine's and the trainer's probabilities differ (kernels, precision, batch shapes), so
with vllm the policy loss is corrected by truncated importance sampling (`importance_weights`):
each token is weighted by min(pi_trainer(y) / pi_engine(y), C), detached, as verl and TRL do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from paec.calibration.features import TokenFeatures, token_entropy, token_features
from paec.calibration.kernels import Workspace
from paec.calibration.scores import token_scores
from paec.config.training import RolloutEngine, TrainConfig
from paec.modeling.loader import resolve_model
from paec.training.distributed import World, full_value
from paec.training.rollout import (
    FeatureCollector,
    RolloutBatch,
    completion_logits,
    sample,
)


@dataclass(frozen=True)
class Rollout:
    """A step's sampled sequences and what is known of each sampled position."""

    batch: RolloutBatch  # B = P * G rows
    entropy: Tensor | None  # (B, T) full entropy at each position, 0 past the end
    features: TokenFeatures | None  # (B, T) fields: PAEC's features (PAEC on)
    engine_logp: Tensor | None = None  # (B, T) log pi_engine(y_t) (vllm), 0 past the end
    trainer_logp: Tensor | None = None  # (B, T) log pi_trainer(y_t) from `score` (vllm)

    def select(self, rows: Tensor) -> Rollout:
        """The rows `rows` (B,) bool or indices."""
        return Rollout(self.batch.select(rows),
                       None if self.entropy is None else self.entropy[rows],
                       None if self.features is None else self.features.select(rows),
                       None if self.engine_logp is None else self.engine_logp[rows],
                       None if self.trainer_logp is None else self.trainer_logp[rows])

    def gather(self, world: World, pad_token_id: int) -> Rollout:
        """Every rank's rollout, rows in rank order, re-padded to common widths: prompts on
        the left, completions on the right (one process: itself)."""
        if not world.distributed:
            return self
        b = self.batch
        prompt = world.gather_rows(b.input_ids[:, :b.prompt_len], pad_token_id, left=True)
        prompt_attn = world.gather_rows(b.attention_mask[:, :b.prompt_len], 0, left=True)
        ids = world.gather_rows(b.completion_ids, pad_token_id)  # (B, T)
        mask = world.gather_rows(b.completion_mask, False)  # (B, T)
        batch = RolloutBatch(torch.cat([prompt, ids], dim=1),
                             torch.cat([prompt_attn, mask.long()], dim=1), prompt.shape[1],
                             mask)

        def rows(x: Tensor | None) -> Tensor | None:
            return None if x is None else world.gather_rows(x, 0)

        feats = (None if self.features is None
                 else TokenFeatures(*(world.gather_rows(t, 0) for t in self.features.tensors())))
        return Rollout(batch, rows(self.entropy), feats, rows(self.engine_logp),
                       rows(self.trainer_logp))


class Engine(Protocol):
    """Samples completions from the current policy."""

    def sample(self, prompts: dict[str, Tensor], *, group_size: int, seed: int,
               stats: bool) -> Rollout:
        """`group_size` completions of each prompt ((P, L_p) ids and attention mask, left
        padded), rows grouped by prompt, seeded by `seed`; with `stats`, the per-position
        statistics the update needs (entropy, features, log-probs)."""
        ...

    def sync(self) -> None:
        """The trainer's weights changed: sample from the new ones from now on."""
        ...

    def close(self) -> None:
        """Release the engine (its process, its memory)."""
        ...


class NativeEngine:
    """The trainer's own sampler on the trainer's own model: nothing to sync. With sharded
    parameters (`fsdp`) every rank decodes until all have finished (`World.all_true`)."""

    def __init__(self, model: Any, tokenizer: Any, cfg: TrainConfig,
                 world: World | None = None) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.all_done = world.all_true if world is not None and cfg.fsdp else None

    def sample(self, prompts: dict[str, Tensor], *, group_size: int, seed: int,
               stats: bool) -> Rollout:
        cfg = self.cfg
        collector = (FeatureCollector(cfg.paec.top_p if cfg.use_paec else None,
                                      top_k=cfg.paec.top_k, chunk_size=cfg.paec.chunk_size)
                     if stats else None)
        batch = sample(self.model, self.tokenizer, prompts, group_size=group_size,
                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       top_p=cfg.top_p, generator_seed=seed, on_step=collector,
                       all_done=self.all_done)
        if collector is None:
            return Rollout(batch, None, None)
        entropy, features = collector.result()  # (B, T), (B, T) fields or None
        return Rollout(batch, entropy, features)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class VLLMEngine:
    """vLLM sampling for the trainer: prompts in, a `Rollout` out, weights pushed in."""

    def __init__(self, model: Any, tokenizer: Any, cfg: TrainConfig,
                 device: torch.device) -> None:
        from paec.engines.vllm import VLLMEngine as Client  # the optional engine's client

        self.model, self.tokenizer, self.cfg, self.device = model, tokenizer, cfg, device
        self.client = Client(str(resolve_model(cfg.model)), dtype=cfg.dtype, seed=cfg.seed,
                             max_model_len=cfg.vllm_max_model_len,
                             kv_cache_gib=cfg.vllm_kv_cache_gib,
                             gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                             cuda_device=physical_gpu(device))

    def sample(self, prompts: dict[str, Tensor], *, group_size: int, seed: int,
               stats: bool) -> Rollout:
        cfg, tok = self.cfg, self.tokenizer
        ids, attn = prompts["input_ids"], prompts["attention_mask"]  # (P, L_p)
        token_lists = [row[a.bool()].tolist() for row, a in zip(ids.cpu(), attn.cpu(),
                                                                strict=True)]
        outs = self.client.generate(token_lists, n=group_size, max_tokens=cfg.max_new_tokens,
                                    temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
                                    eos_token_id=tok.eos_token_id)
        completions = [c for per_prompt in outs for c in per_prompt]  # B rows, grouped
        width = max(1, max(len(t) for t, _ in completions))
        tokens = torch.full((len(completions), width), tok.pad_token_id, dtype=torch.long)
        engine_logp = torch.zeros(len(completions), width)  # (B, T)
        mask = torch.zeros(len(completions), width, dtype=torch.bool)  # (B, T)
        for i, (toks, logps) in enumerate(completions):
            tokens[i, :len(toks)] = torch.tensor(toks, dtype=torch.long)
            engine_logp[i, :len(logps)] = torch.tensor(logps)
            mask[i, :len(toks)] = True  # by length: the pad token may be the EOS token
        batch = RolloutBatch(
            torch.cat([ids.repeat_interleave(group_size, 0), tokens.to(self.device)], dim=1),
            torch.cat([attn.repeat_interleave(group_size, 0), mask.long().to(self.device)],
                      dim=1),
            ids.shape[1], mask.to(self.device))
        rollout = Rollout(batch, None, None, engine_logp.to(self.device))
        return score(self.model, rollout, cfg) if stats else rollout

    def sync(self) -> None:
        self.client.load_weights(engine_weights(self.model))

    def close(self) -> None:
        self.client.close()


def build_engine(cfg: TrainConfig, model: Any, tokenizer: Any, device: torch.device,
                 world: World | None = None) -> Engine:
    """The engine `cfg.rollout_engine` names."""
    if cfg.rollout_engine is RolloutEngine.VLLM:
        return VLLMEngine(model, tokenizer, cfg, device)
    return NativeEngine(model, tokenizer, cfg, world)


def physical_gpu(device: torch.device) -> str | None:
    """The CUDA_VISIBLE_DEVICES entry of `device` (cuda:i is the i-th visible GPU), so that
    the engine shares the trainer's GPU instead of every rank's engine taking GPU 0; None on
    the CPU."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return str(index)
    return visible.split(",")[index].strip()


@torch.no_grad()
def score(model: Any, rollout: Rollout, cfg: TrainConfig) -> Rollout:
    """`rollout` with the trainer's statistics of every sampled position, from one no-grad
    pass per micro-batch: the full entropy, PAEC's features (PAEC on) and log pi_trainer(y),
    all of the temperature-scaled policy, as the native sampler computes them."""
    batch = rollout.batch
    mask = batch.completion_mask  # (B, T)
    entropy = torch.zeros(mask.shape, device=mask.device)  # (B, T)
    logp = torch.zeros(mask.shape, device=mask.device)  # (B, T)
    fields: list[Tensor] | None = None
    workspace = Workspace()
    was_training = model.training
    model.eval()
    for r0 in range(0, mask.shape[0], cfg.micro_batch_size):
        rows = slice(r0, r0 + cfg.micro_batch_size)
        sub = batch.select(rows)
        logits = completion_logits(model, sub)  # (b, T + 1, V)
        logp[rows] = token_scores(logits, sub.completion_ids, sub.completion_mask,
                                  temperature=cfg.temperature).logp  # (b, T)
        at = logits[:, :-1][sub.completion_mask].float() / cfg.temperature  # (n, V)
        if not cfg.use_paec:
            entropy[rows][sub.completion_mask] = token_entropy(
                at, chunk_size=cfg.paec.chunk_size, workspace=workspace)
            continue
        f = token_features(at, cfg.paec.top_p, top_k=cfg.paec.top_k,
                           chunk_size=cfg.paec.chunk_size, workspace=workspace)
        if fields is None:
            fields = [torch.zeros(mask.shape, dtype=t.dtype, device=mask.device)
                      for t in f.tensors()]
        for full, part in zip(fields, f.tensors(), strict=True):
            block = full[rows]  # (b, T) a view
            block[sub.completion_mask] = part
    model.train(was_training)
    features = None if fields is None else TokenFeatures(*fields)
    if features is not None:
        entropy = features.entropy
    return replace(rollout, entropy=entropy, features=features, trainer_logp=logp)


def importance_weights(trainer_logp: Tensor, engine_logp: Tensor, mask: Tensor,
                       cap: float) -> tuple[Tensor, dict[str, float]]:
    """Truncated importance sampling: w_t = min(exp(log pi_trainer - log pi_engine), cap),
    (B, T) each, 0 past the end; and its metrics over the valid tokens (docs/metrics.md):
    `rollout/is_ratio_mean`, `rollout/is_ratio_max` (before truncation),
    `rollout/is_truncated_frac` and `rollout/logp_diff_abs_mean` |log pi_trainer -
    log pi_engine|."""
    diff = torch.where(mask, trainer_logp - engine_logp, 0.0)  # (B, T)
    ratio = diff.exp()  # (B, T)
    weights = torch.where(mask, ratio.clamp_max(cap), 0.0)  # (B, T)
    valid = ratio[mask]  # (n,)
    n = max(int(mask.sum()), 1)
    return weights, {
        "rollout/is_ratio_mean": float(valid.sum()) / n,
        "rollout/is_ratio_max": float(valid.max()) if valid.numel() else 1.0,
        "rollout/is_truncated_frac": float((valid > cap).sum()) / n,
        "rollout/logp_diff_abs_mean": float(diff[mask].abs().sum()) / n,
    }


def engine_weights(model: Any) -> Iterator[tuple[str, Tensor]]:
    """The policy's weights under the base model's Hugging Face names, detached: a full model
    as it is; a LoRA model (peft) merged on the fly, W + (alpha / r) B A for each adapted
    layer, without touching the trained weights (no merge-and-unmerge round trip)."""
    if not hasattr(model, "peft_config"):  # sharded (fsdp): gathered whole, on every rank
        for name, p in model.named_parameters():
            yield name, full_value(p.detach())
        return
    inner = model.get_base_model()  # the transformers model with the adapters inside
    layers = dict(inner.named_modules())
    for name, p in inner.named_parameters():
        parts = name.split(".")
        if any(part.startswith("lora_") for part in parts):
            continue  # the adapters' own factors
        if "base_layer" not in parts:
            yield name, p.detach()
            continue
        i = parts.index("base_layer")
        clean = ".".join(parts[:i] + parts[i + 1:])
        layer = layers[".".join(parts[:i])]
        if parts[-1] != "weight":
            yield clean, p.detach()
            continue
        merged = p.detach().clone()
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A:
                merged += layer.get_delta_weight(adapter).to(merged.dtype)
        yield clean, merged
