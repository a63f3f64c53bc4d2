"""paec.train_config: validation, JSON round trip, unknown keys."""

from __future__ import annotations

import json

import pytest

from paec.config import MaskMode, PAECConfig
from paec.loss_config import LossAggregation, PolicyLossConfig
from paec.train_config import LRSchedule, TrainConfig


def test_round_trips_through_json() -> None:
    cfg = TrainConfig(steps=7, lr_schedule=LRSchedule.COSINE, lora_rank=8,
                      loss=PolicyLossConfig(aggregation=LossAggregation.SEQ_MEAN_TOKEN_MEAN),
                      paec=PAECConfig(mask_mode=MaskMode.HARD), adam_betas=(0.9, 0.95))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig: unknown key\(s\) stepz"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match=r"TrainConfig.loss: unknown key\(s\) clip"):
        TrainConfig.from_dict({"loss": {"clip": 0.1}})


@pytest.mark.parametrize(("field", "value"), [
    ("group_size", 1), ("steps", 0), ("temperature", 0.0), ("dtype", "float16"),
    ("lora_rank", -1), ("top_p", 1.5),
])
def test_out_of_range_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} "):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_batch_size_is_prompts_times_group() -> None:
    assert TrainConfig(prompts_per_step=3, group_size=5).batch_size == 15
