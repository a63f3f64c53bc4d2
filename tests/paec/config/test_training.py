"""paec.config.training: validation, JSON round trip, unknown keys; the data formats, and the
data a TrainConfig loads through them (paec.formats.load_config_data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paec.config.calibration import MaskMode, PAECConfig
from paec.config.loss import LossAggregation, PolicyLossConfig
from paec.config.training import DataFormat, LRSchedule, TrainConfig
from paec.data import builtin_task
from paec.errors import ConfigError, DatasetError
from paec.formats import load_config_data


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


# ---- data formats (paec.formats) ----

GSM8K_ROWS = [{"question": "Tom has 1,000 coins and finds 1 more. How many now?",
               "answer": "1,000 + 1 = 1,001\n#### 1,001"},
              {"question": "What is 6 times 7?", "answer": "6 * 7 = 42\n#### 42"}]
AIME_ROWS = [{"problem": "Find 2 + 3.", "answer": "005"}]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_data_formats_round_trip_through_json_as_their_names(tmp_path: Path) -> None:
    cfg = TrainConfig(train_data="train.jsonl", data_format=DataFormat.DAPO,
                      validation_data="aime.jsonl", validation_data_format=DataFormat.AIME)
    plain = cfg.to_dict()
    assert (plain["data_format"], plain["validation_data_format"]) == ("dapo", "aime")
    assert TrainConfig.from_dict(json.loads(json.dumps(plain))) == cfg
    assert TrainConfig().to_dict()["data_format"] is None


def test_an_unknown_data_format_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"TrainConfig\.data_format must be one of gsm8k, "
                                          r"math, dapo, aime, amc, got 'gsm9k'") as info:
        TrainConfig.from_dict({"train_data": "train.jsonl", "data_format": "gsm9k"})
    assert info.value.param == "data_format"


@pytest.mark.parametrize(("values", "field"), [
    ({"data_format": "gsm8k"}, "data_format"),  # train_data is builtin:add
    ({"train_data": "builtin:chain_sum", "data_format": "math"}, "data_format"),
    ({"validation_data_format": "aime"}, "validation_data_format"),  # no validation_data
    ({"validation_data": "builtin:add", "validation_data_format": "aime"},
     "validation_data_format"),
])
def test_a_data_format_needs_a_file_to_describe(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field} must be null unless "
                                          "[a-z_]+ is a JSONL file") as info:
        TrainConfig.from_dict(values)
    assert info.value.param == field


def test_data_format_loads_a_gsm8k_file_and_validation_has_its_own(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({
        "train_data": write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS), "data_format": "gsm8k",
        "validation_data": write_jsonl(tmp_path / "aime.jsonl", AIME_ROWS),
        "validation_data_format": "aime"})
    train, validation = load_config_data(cfg)
    assert [e.answer for e in train] == ["1001", "42"]
    assert train[1].messages[0]["content"].startswith("What is 6 times 7?\n\n")
    assert [e.answer for e in validation] == ["5"]


def test_without_a_data_format_a_public_layout_is_refused_naming_the_row(
        tmp_path: Path) -> None:
    cfg = TrainConfig(train_data=write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS))
    with pytest.raises(DatasetError, match="line 1: must have 'messages'"):
        load_config_data(cfg)
    # and a gsm8k row that is not one: its line and field
    bad = TrainConfig(train_data=write_jsonl(tmp_path / "bad.jsonl", [*GSM8K_ROWS, {
        "question": "q", "answer": "no hashes"}]), data_format="gsm8k")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"line 3: answer: has no '#### "):
        load_config_data(bad)


def test_built_in_tasks_load_as_before_validation_drawn_with_the_next_seed() -> None:
    train, validation = load_config_data(TrainConfig(train_size=5, validation_data="builtin:add",
                                                     validation_size=6, seed=4))
    assert [e.item for e in train] == [e.item for e in builtin_task("builtin:add", size=5,
                                                                     seed=4)]
    assert [e.item for e in validation] == [e.item for e in builtin_task("builtin:add", size=6,
                                                                          seed=5)]
    assert load_config_data(TrainConfig(train_size=2))[1] == []


def test_a_run_too_short_for_the_anchor_warns_that_paec_never_acts() -> None:
    short = TrainConfig(steps=3)  # the anchor measures the first 4 steps by default
    assert len(short.warnings()) == 1 and "never acts" in short.warnings()[0]
    assert "paec.anchor_steps (4)" in short.warnings()[0]
    assert TrainConfig(steps=5).warnings() == []
    assert TrainConfig(steps=3, use_paec=False).warnings() == []  # GRPO asked for
    assert TrainConfig(steps=3, paec=PAECConfig(anchor_steps=2)).warnings() == []
