"""paec.config.training: `report_to`, spelled as TRL spells it, normalised and validated."""

from __future__ import annotations

import json

import pytest

from paec.cli import load_config
from paec.config.training import TrainConfig
from paec.errors import ConfigError


def test_reports_nowhere_by_default() -> None:
    assert TrainConfig().report_to == []


@pytest.mark.parametrize(("given", "stored"), [
    ("tensorboard", ["tensorboard"]),
    (["wandb"], ["wandb"]),
    (("wandb", "tensorboard"), ["wandb", "tensorboard"]),
    (["tensorboard", "tensorboard"], ["tensorboard"]),
    ("all", ["tensorboard", "wandb"]),
    (["all"], ["tensorboard", "wandb"]),
    ("none", []),
    (["none"], []),
    ([], []),
])
def test_trl_spellings_are_normalised(given: object, stored: list[str]) -> None:
    assert TrainConfig(report_to=given).report_to == stored  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [
    "comet_ml", ["tensorboard", "mlflow"], ["none", "wandb"], ["all", "tensorboard"],
    [1], 3, None, {"tensorboard": True},
])
def test_anything_else_is_an_error_naming_report_to(given: object) -> None:
    with pytest.raises(ConfigError, match=r"^TrainConfig\.report_to must be a list of "
                                          r"tensorboard, wandb, or \"all\" or \"none\" alone, "
                                          r"got ") as info:
        TrainConfig(report_to=given)  # type: ignore[arg-type]
    assert info.value.param == "report_to"


def test_round_trips_through_json() -> None:
    cfg = TrainConfig(report_to="all")  # type: ignore[arg-type]
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.report_to == ["tensorboard", "wandb"]


@pytest.mark.parametrize(("override", "stored"), [
    ("report_to=tensorboard", ["tensorboard"]),  # not JSON: kept as a string
    ('report_to=["wandb", "tensorboard"]', ["wandb", "tensorboard"]),
    ("report_to=none", []),
])
def test_set_overrides_it_from_the_command_line(override: str, stored: list[str]) -> None:
    assert load_config(None, [override]).report_to == stored


def test_a_bad_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"TrainConfig\.report_to .*got 'tensorbord'"):
        load_config(None, ["report_to=tensorbord"])
