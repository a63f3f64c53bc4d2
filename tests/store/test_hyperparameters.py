"""The mapping of a job's hyperparameters (OpenAI's fields and our extensions) onto
TrainConfig: what the worker runs, what the job echoes, and a 400 naming the full path of
every bad field. No HTTP, no database."""

from __future__ import annotations

from typing import Any

import pytest

from paec.config.training import TrainConfig
from store.errors import InvalidRequestError
from store.hyperparameters import (
    DEVICE_KEY,
    JOB_DEFAULTS,
    LIBRARY_KEYS,
    PARAM,
    SERVER_KEYS,
    USER_KEYS,
    JobLimits,
    job_defaults,
    resolve_hyperparameters,
)
from store.settings import Settings

DEFAULTS = TrainConfig()


def refused(raw: object, rows: int = 10) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        resolve_hyperparameters(raw, training_rows=rows)
    return info.value


def test_no_hyperparameters_run_trainconfig_defaults() -> None:
    hp = resolve_hyperparameters(None, training_rows=10)
    expected = {k: v for k, v in DEFAULTS.to_dict().items() if k not in SERVER_KEYS}
    assert hp.config == expected | JOB_DEFAULTS
    assert hp.total_steps == DEFAULTS.steps
    # "auto" epochs: the default steps over 10 rows at the default batch.
    assert hp.summary == {"batch_size": DEFAULTS.prompts_per_step,
                          "learning_rate_multiplier": 1,
                          "n_epochs": DEFAULTS.steps * DEFAULTS.prompts_per_step / 10}


def test_openai_fields_map_onto_trainconfig() -> None:
    hp = resolve_hyperparameters({"batch_size": 3, "learning_rate_multiplier": 0.5,
                                  "n_epochs": 2, "eval_interval": 5, "eval_samples": 4},
                                 training_rows=10)
    assert hp.config["prompts_per_step"] == 3
    assert hp.config["learning_rate"] == pytest.approx(0.5 * DEFAULTS.learning_rate)
    assert hp.total_steps == hp.config["steps"] == 7  # ceil(2 * 10 / 3)
    assert (hp.config["eval_interval"], hp.config["eval_k"]) == (5, 4)
    assert hp.summary == {"batch_size": 3, "learning_rate_multiplier": 0.5, "n_epochs": 2}


def test_auto_is_the_default() -> None:
    auto = resolve_hyperparameters({k: "auto" for k in ("batch_size", "n_epochs",
                                                        "learning_rate_multiplier",
                                                        "eval_interval", "eval_samples",
                                                        "compute_multiplier")},
                                   training_rows=10)
    assert auto == resolve_hyperparameters({}, training_rows=10)


def test_extensions_reach_the_config_and_the_echo_lists_every_effective_value() -> None:
    hp = resolve_hyperparameters({"group_size": 4, "steps": 3, "learning_rate": 1e-5,
                                  "paec": {"quantile": 0.7}, "loss": {"loss_type": "cispo"},
                                  "lora_target_modules": ["q_proj"], "adam_betas": [0.9, 0.95]},
                                 training_rows=6)
    assert hp.config["group_size"] == 4 and hp.total_steps == 3
    assert hp.config["paec"]["quantile"] == 0.7
    assert hp.config["paec"]["top_p"] == DEFAULTS.paec.top_p  # untouched defaults stay
    assert hp.config["loss"]["loss_type"] == "cispo"
    assert hp.config["adam_betas"] == [0.9, 0.95]
    assert set(USER_KEYS) <= set(hp.echo)
    assert hp.echo["learning_rate_multiplier"] == 5  # 1e-5 / 2e-6
    assert hp.echo["n_epochs"] == 2  # 3 steps * 4 prompts / 6 rows
    assert hp.echo["reasoning_effort"] == "default"
    # What the job row stores must rebuild the same TrainConfig.
    TrainConfig.from_dict(hp.config)


@pytest.mark.parametrize(("raw", "param"), [
    ({"paec": {"top_p": 1.5}}, "paec.top_p"),
    ({"paec": {"tau": 1.0}}, "paec.tau"),
    ({"loss": {"clip_low": 2.0}}, "loss.clip_low"),
    ({"loss": {"clip_cov_lb": 9.0}}, "loss.clip_cov_lb"),
    ({"group_size": 1}, "group_size"),
    ({"group_size": "4"}, "group_size"),
    ({"group_size": 4.5}, "group_size"),
    ({"use_paec": 1}, "use_paec"),
    ({"lr_schedule": "exponential"}, "lr_schedule"),
    ({"max_grad_norm": float("inf")}, "max_grad_norm"),
    ({"paec": 3}, "paec"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 257}, "batch_size"),
    ({"n_epochs": 0}, "n_epochs"),
    ({"n_epochs": 51}, "n_epochs"),
    ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
    ({"eval_samples": 0}, "eval_samples"),
    ({"eval_interval": -1}, "eval_interval"),
    ({"steps": 0}, "steps"),
    ({"entropy_calibration": True}, "entropy_calibration"),
])
def test_a_bad_field_is_a_400_naming_its_full_path(raw: dict[str, Any], param: str) -> None:
    error = refused(raw)
    assert error.param == f"{PARAM}.{param}"
    assert error.message.startswith(f"{PARAM}.{param}: ")


# `device` is a server key of TrainConfig, but the request's `device` is the device kind
# (tested below).
@pytest.mark.parametrize("key", sorted(SERVER_KEYS - {DEVICE_KEY}))
def test_fields_the_server_controls_are_refused(key: str) -> None:
    error = refused({key: "x"})
    assert error.param == f"{PARAM}.{key}"
    assert "set by the server" in error.message


def test_device_kind_defaults_to_any_and_is_echoed() -> None:
    hp = resolve_hyperparameters(None, training_rows=10)
    assert hp.device == "any"
    assert hp.echo[DEVICE_KEY] == "any"


@pytest.mark.parametrize("kind", ["any", "gpu", "cpu"])
def test_device_kind_is_echoed_but_never_reaches_the_trainer(kind: str) -> None:
    hp = resolve_hyperparameters({"device": kind, "steps": 2}, training_rows=10)
    assert hp.device == kind
    assert hp.echo[DEVICE_KEY] == kind
    # The worker's PAEC_WORKER_DEVICE picks the torch device, not the request.
    assert DEVICE_KEY not in hp.config
    assert hp.config == resolve_hyperparameters({"steps": 2}, training_rows=10).config


@pytest.mark.parametrize("kind", ["cuda", "cuda:0", "GPU", "", None, 1, ["gpu"]])
def test_an_unknown_device_kind_is_a_400_naming_the_field(kind: object) -> None:
    error = refused({"device": kind})
    assert error.param == f"{PARAM}.{DEVICE_KEY}"
    assert '"any", "gpu", "cpu"' in error.message


@pytest.mark.parametrize(("raw", "param"), [
    ({"learning_rate": 1e-5, "learning_rate_multiplier": 2}, "learning_rate"),
    ({"steps": 10, "n_epochs": 1}, "steps"),
    ({"prompts_per_step": 2, "batch_size": 2}, "prompts_per_step"),
    ({"eval_k": 2, "eval_samples": 2}, "eval_k"),
])
def test_an_openai_field_and_its_trainconfig_twin_conflict(raw: dict[str, Any],
                                                           param: str) -> None:
    error = refused(raw)
    assert error.param == f"{PARAM}.{param}"
    assert "conflicts" in error.message


def test_the_twin_alone_is_accepted_when_the_openai_field_is_auto() -> None:
    hp = resolve_hyperparameters({"steps": 5, "n_epochs": "auto"}, training_rows=10)
    assert hp.total_steps == 5


def test_reasoning_effort_other_than_default_says_why() -> None:
    error = refused({"reasoning_effort": "high"})
    assert error.param == f"{PARAM}.reasoning_effort"
    assert "not supported" in error.message


def test_compute_multiplier_must_be_auto() -> None:
    assert refused({"compute_multiplier": 2}).param == f"{PARAM}.compute_multiplier"


def test_built_in_task_sizes_are_refused() -> None:
    assert refused({"train_size": 5}).param == f"{PARAM}.train_size"


def test_hyperparameters_must_be_an_object() -> None:
    assert refused([1, 2]).param == PARAM


def test_one_epoch_over_few_rows_is_at_least_one_step() -> None:
    hp = resolve_hyperparameters({"n_epochs": 0.1, "batch_size": 8}, training_rows=2)
    assert hp.total_steps == 1


# ---- bounds ----

LIMITS = JobLimits(max_steps=100, max_completions_per_step=64, max_new_tokens=512)


@pytest.mark.parametrize(("raw", "field"), [
    ({"steps": 2**31}, "steps"), ({"steps": 10**20}, "steps"), ({"steps": 1e20}, "steps"),
    ({"group_size": 10**9}, "group_size"), ({"warmup_steps": 1e30}, "warmup_steps"),
    ({"learning_rate_multiplier": 1e308}, "learning_rate_multiplier"),
    ({"learning_rate_multiplier": 10**400}, "learning_rate_multiplier"),
    ({"loss": {"clip_high": 10**400}}, "loss.clip_high"),
    ({"adam_betas": [10**400, 0.9]}, "adam_betas"),
    ({"eval_samples": 10**9}, "eval_samples"), ({"eval_interval": 10**30}, "eval_interval"),
])
def test_unbounded_values_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    error = refused(raw)
    assert error.param == f"{PARAM}.{field}"
    assert len(error.message) < 400  # the value is not echoed whole


@pytest.mark.parametrize(("raw", "field", "setting"), [
    ({"steps": 101}, "steps", "PAEC_MAX_JOB_STEPS"),
    ({"n_epochs": 50}, "n_epochs", "PAEC_MAX_JOB_STEPS"),  # ceil(50 * 10 / 4) = 125 steps
    ({"group_size": 32, "batch_size": 3}, "group_size", "PAEC_MAX_JOB_COMPLETIONS_PER_STEP"),
    ({"batch_size": 9}, "batch_size", "PAEC_MAX_JOB_COMPLETIONS_PER_STEP"),  # 9 * 8
    ({"max_new_tokens": 513}, "max_new_tokens", "PAEC_MAX_JOB_NEW_TOKENS"),
])
def test_a_job_past_the_operators_limits_is_refused_naming_the_field(
        raw: dict[str, Any], field: str, setting: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve_hyperparameters(raw, training_rows=10, limits=LIMITS)
    assert info.value.param == f"{PARAM}.{field}" and setting in info.value.message


def test_a_job_at_the_operators_limits_is_accepted() -> None:
    hp = resolve_hyperparameters({"steps": 100, "group_size": 16, "batch_size": 4,
                                  "max_new_tokens": 512}, training_rows=10, limits=LIMITS)
    assert hp.total_steps == 100


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(max_job_steps=7, max_job_completions_per_step=9, max_job_new_tokens=11)
    assert JobLimits.from_settings(settings) == JobLimits(7, 9, 11)


def test_jobs_keep_token_traces_by_default_and_may_turn_them_off() -> None:
    assert resolve_hyperparameters(None, training_rows=10).config["trace_samples"] == 4
    assert resolve_hyperparameters(None, training_rows=10).echo["trace_samples"] == 4
    off = resolve_hyperparameters({"trace_samples": 0}, training_rows=10)
    assert off.config["trace_samples"] == 0


@pytest.mark.parametrize("key", sorted(LIBRARY_KEYS))
def test_library_only_fields_are_refused_naming_them(key: str) -> None:
    error = refused({key: ["tensorboard"]})
    assert error.param == f"{PARAM}.{key}"
    assert "library" in str(error)
    assert key not in USER_KEYS


def test_the_schema_defaults_are_what_a_job_gets() -> None:
    from api.schemas.hyperparameters import OPENAI_FIELDS, hyperparameters_schema

    properties = hyperparameters_schema()["properties"]
    echo = resolve_hyperparameters(None, training_rows=10).echo
    defaults = job_defaults()
    assert defaults["trace_samples"] == 4 and defaults["learning_rate"] == DEFAULTS.learning_rate
    for key, value in defaults.items():
        if key not in OPENAI_FIELDS:  # eval_interval: OpenAI's "auto" describes it
            assert properties[key]["default"] == value == echo[key], key
