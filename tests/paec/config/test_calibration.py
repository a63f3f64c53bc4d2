"""paec.config.calibration: defaults of docs/method.md, validation, JSON round trip."""

from __future__ import annotations

import dataclasses

import pytest

from paec.config.calibration import EntropyNormalization, MaskMode, PAECConfig


def test_defaults_are_the_documented_ones() -> None:
    cfg = PAECConfig()
    assert (cfg.top_p, cfg.score_weight, cfg.quantile, cfg.mask_temperature) == (0.9, 0.5, 0.8,
                                                                                 0.05)
    assert (cfg.anchor_steps, cfg.floor_ratio, cfg.penalty_weight, cfg.entropy_bonus) == (
        4, 0.8, 1.0, 0.0)
    assert cfg.normalization is EntropyNormalization.LOG_NUCLEUS
    assert cfg.mask_mode is MaskMode.SOFT


def test_every_field_has_a_docstring() -> None:
    import inspect

    source = inspect.getsource(PAECConfig)
    for field in dataclasses.fields(PAECConfig):
        after = source.split(f"    {field.name}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), f"{field.name} has no docstring"


def test_round_trips_through_plain_values() -> None:
    cfg = PAECConfig(mask_mode=MaskMode.HARD, top_p=0.95)
    data = cfg.to_dict()
    assert data["mask_mode"] == "hard" and type(data["mask_mode"]) is str
    assert PAECConfig(**data) == cfg


@pytest.mark.parametrize(("field", "value"), [
    ("top_p", 0.0), ("top_p", 1.5), ("quantile", -0.1), ("mask_temperature", 0.0),
    ("anchor_steps", 0), ("floor_ratio", 1.2), ("score_weight", float("nan")), ("top_k", 1),
])
def test_out_of_range_values_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"PAECConfig\.{field} "):
        PAECConfig(**{field: value})


def test_unknown_enum_value_is_refused() -> None:
    with pytest.raises(ValueError, match=r"PAECConfig\.mask_mode must be one of soft, hard"):
        PAECConfig(mask_mode="fuzzy")  # type: ignore[arg-type]
