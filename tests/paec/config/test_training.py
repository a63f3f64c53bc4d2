"""paec.config.training: validation, JSON round trip, unknown keys."""

from __future__ import annotations

import json

import pytest

from paec.config.calibration import MaskMode, PAECConfig
from paec.config.loss import LossAggregation, PolicyLossConfig
from paec.config.training import LRSchedule, TrainConfig


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


@pytest.mark.parametrize(("field", "value"), [
    ("steps", 2**31), ("group_size", 10**9), ("max_new_tokens", 10**9),
    ("micro_batch_size", 10**9), ("eval_k", 10**9), ("trace_samples", 10**9),
    ("update_epochs", 10**9), ("lora_rank", 10**9), ("prompts_per_step", 10**9),
    ("warmup_steps", 10**30), ("checkpoint_every", 10**30), ("eval_interval", 10**30),
    ("train_size", 10**12), ("seed", 2**64),
])
def test_integers_have_upper_bounds(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be an integer in "):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("steps", 1e20), ("warmup_steps", 1e30), ("group_size", 8.0), ("steps", True),
])
def test_integers_given_as_floats_or_bools_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be an integer"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("learning_rate", 1e302), ("learning_rate", float("inf")), ("temperature", float("inf")),
    ("weight_decay", float("nan")), ("lora_alpha", 10**400), ("weight_decay", 1e9),
])
def test_floats_must_be_finite_and_in_range(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be a finite number"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("betas", [(0.9, 1.0), (float("nan"), 0.9), (0.9,)])
def test_adam_betas_must_be_two_numbers_below_one(betas: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match=r"TrainConfig\.adam_betas must be two numbers"):
        TrainConfig(adam_betas=betas)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cls", "field", "value"), [
    (PAECConfig, "top_k", 10**9), (PAECConfig, "anchor_steps", 2**31),
    (PAECConfig, "chunk_size", 10**9), (PAECConfig, "penalty_weight", float("inf")),
    (PAECConfig, "mask_temperature", 10**400), (PAECConfig, "eps", 1.0),
    (PolicyLossConfig, "clip_high", float("inf")), (PolicyLossConfig, "kl_coef", 10**400),
    (PolicyLossConfig, "clip_low", float("nan")),
])
def test_nested_configs_bound_their_fields(cls: type[object], field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} must be "):
        cls(**{field: value})


def test_a_hostile_value_is_not_echoed_whole() -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(steps=10**4000)
    assert len(str(info.value)) < 200
