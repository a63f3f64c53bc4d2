"""One update of a fixed batch, in one process or as a rank under torchrun (for
test_distributed.py): `python distributed_step.py CONFIG.json OUT.pt`.

Every rank samples the same whole batch (same model, same seed), keeps its contiguous share of
the rows with its completions cut to its own longest one (as a rank's own rollout would be),
gathers the shares back (`Rollout.gather`) and runs the trainer's update. Rank 0 saves the
update's metrics, the per-token mask weights of every row and the parameters after it."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from paec.calibration.features import TokenFeatures
from paec.config.training import TrainConfig
from paec.training.advantages import group_advantages
from paec.training.distributed import full_value
from paec.training.engines import Rollout
from paec.training.rollout import RolloutBatch, encode_prompts
from paec.training.trainer import Trainer


def whole_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's whole value (gathered from the ranks' shards with fsdp)."""
    return {k: full_value(v.detach()).clone() for k, v in model.state_dict().items()}


def main(config: str, out: str) -> None:
    cfg = TrainConfig.from_file(config)
    with Trainer(cfg) as trainer:
        world = trainer.world
        trainer.anchor.observe(50.0)  # a floor far above H_bar: the PAEC gradient is live
        examples = trainer.cursor.next_batch(cfg.prompts_per_step)
        prompts = encode_prompts(trainer.tokenizer, [e.messages for e in examples],
                                 trainer.device)
        whole = trainer.engine.sample(prompts, group_size=cfg.group_size, seed=1234,
                                      stats=True)
        rows = torch.arange(whole.batch.input_ids.shape[0])
        mine = whole.select(torch.tensor(world.shard(rows.tolist()), dtype=torch.long))
        width = int(mine.batch.completion_mask.sum(-1).max())  # this rank's longest
        b = mine.batch
        cut = RolloutBatch(b.input_ids[:, :b.prompt_len + width],
                           b.attention_mask[:, :b.prompt_len + width], b.prompt_len,
                           b.completion_mask[:, :width])
        assert mine.entropy is not None and mine.features is not None
        mine = Rollout(cut, mine.entropy[:, :width],
                       TokenFeatures(*(t[:, :width] for t in mine.features.tensors())))
        rollout = mine.gather(world, trainer.tokenizer.pad_token_id)
        rewards = (torch.arange(rollout.batch.input_ids.shape[0]) % 3).float()  # (B,)
        advantages, _ = group_advantages(rewards, cfg.group_size, normalize_std=True)
        before = whole_params(trainer.model)
        metrics, traces = trainer._update(rollout, advantages)
        after = whole_params(trainer.model)  # every rank gathers (fsdp: shards)
        if world.is_main:
            torch.save({"metrics": metrics,
                        "mask": [t["mask"] for t in traces], "before": before,
                        "params": after},
                       Path(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
