"""A reinforcement job's hyperparameters: OpenAI's fields and our extensions, mapped onto
`paec.config.training.TrainConfig` and validated by building it (docs/openai.md 3.1).

OpenAI's fields (each may be "auto", meaning TrainConfig's default):

    batch_size               -> prompts_per_step
    learning_rate_multiplier -> learning_rate = multiplier * TrainConfig's default rate
    n_epochs                 -> steps = ceil(n_epochs * training rows / prompts_per_step)
    eval_interval            -> eval_interval (0: evaluate only at the end)
    eval_samples             -> eval_k
    reasoning_effort         only "default";  compute_multiplier  only "auto"

Extensions are TrainConfig's own field names (`group_size`, `paec: {...}`, `loss: {...}`),
sent next to them in `method.reinforcement.hyperparameters` (the client passes unknown keys
through, docs/openai.md 1). Fields the server controls (paths, grader, seed) are refused.
Every error is an InvalidRequestError whose `param` is the full path of the field.

Bounds: TrainConfig bounds every integer and keeps every float finite; on top of
that the operator's `JobLimits` (PAEC_MAX_JOB_STEPS, PAEC_MAX_JOB_COMPLETIONS_PER_STEP,
PAEC_MAX_JOB_NEW_TOKENS, PAEC_MAX_JOB_PROCESSES) cap what a job may ask for, and a job past
them is a 400 naming the field the request sent (`n_epochs` when the steps came from it).

One extension is not a TrainConfig field: `device` ("any", "gpu" or "cpu"; default "any")
is the kind of worker the job asks for. It routes the job to a queue (store.queue) and is
echoed back, but never reaches TrainConfig: the worker's own PAEC_WORKER_DEVICE decides the
torch device. The kind and TrainConfig's `num_processes` (n devices of one worker host)
pick the job's queue, `store.queue.training_queue(kind, n)`; `job_processes` reads n back
from a stored job's `method`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from paec.config.calibration import PAECConfig
from paec.config.checks import is_finite_number
from paec.config.loss import PolicyLossConfig
from paec.config.training import TrainConfig
from paec.errors import ConfigError
from store.errors import InvalidRequestError
from store.queue import DEVICE_ANY, DEVICE_KINDS
from store.settings import Settings

PARAM = "method.reinforcement.hyperparameters"

SERVER_KEYS = frozenset({"model", "train_data", "validation_data", "grader",
                         "allow_python_grader", "output_dir", "device", "seed"})
"""TrainConfig fields the worker fills from the job row, never from the request."""
DEVICE_KEY = "device"
"""Not TrainConfig's `device` (a server key): the kind of worker the job asks for."""
BUILTIN_TASK_KEYS = frozenset({"train_size", "validation_size"})
"""TrainConfig fields that only matter for built-in tasks; a job always trains on files."""
OPENAI_KEYS = ("batch_size", "learning_rate_multiplier", "n_epochs", "eval_interval",
               "eval_samples", "reasoning_effort", "compute_multiplier")
LIBRARY_KEYS = frozenset({"report_to"})
FORMAT_KEYS = frozenset({"data_format", "validation_data_format"})
"""Library-only: the service stores paec's own rows; public layouts (GSM8K, MATH, DAPO, AIME,
AMC) are converted when uploading (`paec files upload FILE --format NAME`)."""
"""TrainConfig fields of the library alone: a job's metrics go to the service's own store (the
metrics routes, the stream, the dashboard), never to a logger a tenant picks on the worker."""
USER_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                  if f.name not in SERVER_KEYS | BUILTIN_TASK_KEYS | LIBRARY_KEYS | FORMAT_KEYS)
"""The TrainConfig fields a request may set, in TrainConfig's order."""
JOB_DEFAULTS: dict[str, Any] = {"trace_samples": 4}
"""Where a job's default differs from the library's: jobs keep the per-token traces of 4
completions a step (bounded in store.traces), so the dashboard can show which tokens PAEC
selects without the user knowing to ask; 0 turns them off."""
# (OpenAI field, TrainConfig field): one value, two names; sending both is ambiguous.
ALIASES = (("batch_size", "prompts_per_step"), ("learning_rate_multiplier", "learning_rate"),
           ("n_epochs", "steps"), ("eval_samples", "eval_k"))

MAX_BATCH_SIZE = 256
MAX_EPOCHS = 50
"""OpenAI's ranges: batch_size 1-256, n_epochs up to 50."""

_DEFAULTS = TrainConfig()
@dataclass(frozen=True)
class JobLimits:
    """The largest job the operator accepts (store.settings max_job_*): TrainConfig's
    own bounds are far past any real run, these are what this server will train."""

    max_steps: int
    """Largest number of optimiser steps (PAEC_MAX_JOB_STEPS)."""
    max_completions_per_step: int
    """Largest group_size * prompts_per_step (PAEC_MAX_JOB_COMPLETIONS_PER_STEP)."""
    max_new_tokens: int
    """Largest max_new_tokens (PAEC_MAX_JOB_NEW_TOKENS)."""
    max_processes: int = 1
    """Largest num_processes (PAEC_MAX_JOB_PROCESSES; its default, 1, here too)."""

    @staticmethod
    def from_settings(settings: Settings) -> JobLimits:
        return JobLimits(max_steps=settings.max_job_steps,
                         max_completions_per_step=settings.max_job_completions_per_step,
                         max_new_tokens=settings.max_job_new_tokens,
                         max_processes=settings.max_job_processes)


@dataclass(frozen=True)
class Hyperparameters:
    """A request's hyperparameters, resolved."""

    config: dict[str, Any]
    """TrainConfig.to_dict() without the SERVER_KEYS: what the worker runs."""
    echo: dict[str, Any]
    """`method.reinforcement.hyperparameters` as the job object shows it: OpenAI's fields as
    numbers (reasoning_effort "default") and every extension with its effective value."""
    summary: dict[str, Any]
    """The job object's top-level `hyperparameters` {batch_size, learning_rate_multiplier,
    n_epochs}."""
    total_steps: int
    device: str = DEVICE_ANY
    """The device kind the job asks for (store.queue.DEVICE_KINDS): where it is routed."""
    processes: int = 1
    """TrainConfig.num_processes: the devices (on one worker host) it is routed to."""
    warnings: tuple[str, ...] = ()
    """TrainConfig.warnings(): valid settings that are almost surely a mistake (the job
    records each as a `warn` event)."""


def _error(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param)


def _shown(value: object) -> str:
    # A hostile value (a 4,000-digit int, a 1 MB string) is not echoed whole.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(hint: Any) -> str:
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is bool:
        return "true or false"
    if hint is str or (isinstance(hint, type) and issubclass(hint, StrEnum)):
        return "a string"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _describe(a)
                           for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return "a list of strings"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    return "an object"


def _check_type(value: object, hint: Any, param: str) -> object:
    """`value` if it is JSON of the annotated type (ints pass for floats), else a 400. Done
    here because the dataclasses' own checks assume the right types (`"4" >= 2` raises a
    TypeError, 4.5 passes `>= 1`, true passes as 1)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(value, option, param)
            except InvalidRequestError:
                continue
        raise _error(param, f"must be {_describe(hint)}, got {_shown(value)}")
    ok: bool
    if hint is int:
        ok = _integer(value)
    elif hint is float:
        ok = _number(value)
        if ok and not is_finite_number(value):  # inf, or an int past the float range
            raise _error(param, f"must be a finite number, got {_shown(value)}")
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is str or (isinstance(hint, type) and issubclass(hint, StrEnum)):
        ok = isinstance(value, str)
    elif typing.get_origin(hint) is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif typing.get_origin(hint) is tuple:
        size = len(typing.get_args(hint))
        ok = (isinstance(value, list) and len(value) == size
              and all(map(is_finite_number, value)))
    else:
        raise AssertionError(f"unhandled annotation {hint!r}")  # a new TrainConfig field type
    if not ok:
        raise _error(param, f"must be {_describe(hint)}, got {_shown(value)}")
    return value


def _check_section(raw: Mapping[str, Any], cls: type[Any], param: str) -> dict[str, Any]:
    """A nested config (`paec`, `loss`): known keys of the right types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise _error(f"{param}.{key}", f"unknown field; {cls.__name__} has "
                         + ", ".join(sorted(known)))
        out[key] = _check_type(value, hints[key], f"{param}.{key}")
    return out


def _extension(key: str, value: object, param: str) -> object:
    hint = typing.get_type_hints(TrainConfig)[key]
    if key in ("paec", "loss"):
        if not isinstance(value, Mapping):
            raise _error(param, f"must be an object, got {value!r}")
        return _check_section(value, PAECConfig if key == "paec" else PolicyLossConfig, param)
    return _check_type(value, hint, param)


def _auto_or(raw: Mapping[str, Any], key: str, check: Any, rule: str) -> Any:
    """None for absent/"auto", else the value if `check(value)`, else a 400."""
    value = raw.get(key, "auto")
    if value == "auto" or value is None:
        return None
    if not check(value):
        raise _error(f"{PARAM}.{key}", f"must be \"auto\" or {rule}, got {_shown(value)}")
    return value


def _openai_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's fields, checked; None means auto."""
    effort = raw.get("reasoning_effort", "default")
    if effort not in (None, "default"):
        if effort in ("low", "medium", "high"):
            raise _error(f"{PARAM}.reasoning_effort", f"{effort!r} is not supported: the "
                         "models trained here have no reasoning-effort setting; only "
                         "\"default\" is accepted (bound the completion length with "
                         "max_new_tokens instead)")
        raise _error(f"{PARAM}.reasoning_effort",
                     f"must be one of default, low, medium, high, got {effort!r}")
    multiplier = raw.get("compute_multiplier", "auto")
    if multiplier not in (None, "auto"):
        raise _error(f"{PARAM}.compute_multiplier", f"only \"auto\" is supported, got "
                     f"{multiplier!r}: set the compute with steps, group_size and "
                     "max_new_tokens instead")
    return {
        "batch_size": _auto_or(raw, "batch_size",
                               lambda v: _integer(v) and 1 <= v <= MAX_BATCH_SIZE,
                               f"an integer in [1, {MAX_BATCH_SIZE}]"),
        "learning_rate_multiplier": _auto_or(
            raw, "learning_rate_multiplier",
            lambda v: is_finite_number(v) and v > 0, "a number > 0"),
        "n_epochs": _auto_or(raw, "n_epochs",
                             lambda v: _number(v) and 0 < v <= MAX_EPOCHS,
                             f"a number in (0, {MAX_EPOCHS}]"),
        "eval_interval": _auto_or(raw, "eval_interval", lambda v: _integer(v) and v >= 0,
                                  "an integer >= 0 (0: only at the end)"),
        "eval_samples": _auto_or(raw, "eval_samples", lambda v: _integer(v) and v >= 1,
                                 "an integer >= 1"),
    }


def _device_kind(raw: Mapping[str, Any]) -> str:
    kind = raw.get(DEVICE_KEY, DEVICE_ANY)
    if not isinstance(kind, str) or kind not in DEVICE_KINDS:
        raise _error(f"{PARAM}.{DEVICE_KEY}", "must be one of " + ", ".join(
            f'"{k}"' for k in DEVICE_KINDS) + f" (the kind of worker to train on), got "
            f"{kind!r}")
    return kind


def _config_param(exc: ConfigError, openai: Mapping[str, Any]) -> str:
    """The request path of the field a TrainConfig error names (its `param` "paec.top_p" ->
    "method.reinforcement.hyperparameters.paec.top_p"); a field the request gave under its
    OpenAI name is reported under that name."""
    field = exc.param
    if field and "." not in field:
        field = next((o for o, t in ALIASES if t == field and openai.get(o) is not None),
                     field)
    return f"{PARAM}.{field}" if field else PARAM


def _round(value: float) -> float | int:
    # Six significant digits: 0.5 stays 0.5 after (0.5 * 2e-6) / 2e-6, and an integer is one.
    rounded = float(f"{value:.6g}")
    return int(rounded) if rounded.is_integer() else rounded


def _check_limits(trainer: TrainConfig, raw: Mapping[str, Any], limits: JobLimits) -> None:
    """A 400 naming the field (as the request sent it) of a job larger than the operator
    allows."""
    def named(*keys: str) -> str:
        return f"{PARAM}.{next((k for k in keys if raw.get(k) not in (None, 'auto')), keys[0])}"

    for value, limit, setting, param, what in (
            (trainer.steps, limits.max_steps, "PAEC_MAX_JOB_STEPS",
             named("steps", "n_epochs", "batch_size", "prompts_per_step"), "steps"),
            (trainer.batch_size, limits.max_completions_per_step,
             "PAEC_MAX_JOB_COMPLETIONS_PER_STEP",
             named("group_size", "batch_size", "prompts_per_step"),
             f"completions per step (group_size {trainer.group_size} x prompts_per_step "
             f"{trainer.prompts_per_step})"),
            (trainer.max_new_tokens, limits.max_new_tokens, "PAEC_MAX_JOB_NEW_TOKENS",
             named("max_new_tokens"), "max_new_tokens"),
            (trainer.num_processes, limits.max_processes, "PAEC_MAX_JOB_PROCESSES",
             named("num_processes"), "processes (devices of one worker)")):
        if value > limit:
            raise _error(param, f"the job asks for {value} {what}; this server accepts at "
                         f"most {limit} ({setting})")


def _check_keys(raw: Mapping[str, Any]) -> None:
    """Every key is one a request may send; InvalidRequestError naming the first that is not."""
    for key in raw:
        if key == DEVICE_KEY:
            continue
        if key in SERVER_KEYS:
            raise _error(f"{PARAM}.{key}", "is set by the server and cannot be sent "
                         "(model, training_file, validation_file, grader and seed are "
                         "fields of the request itself)")
        if key in FORMAT_KEYS:
            raise _error(f"{PARAM}.{key}", "the service trains on paec's own rows; convert a "
                         "public dataset's layout when uploading: paec files upload FILE "
                         "--format NAME (docs/datasets.md)")
        if key in LIBRARY_KEYS:
            raise _error(f"{PARAM}.{key}", "is for library users (python -m paec train); a "
                         "job's metrics are in /api/jobs/{id}/metrics, its stream and the "
                         "dashboard")
        if key in BUILTIN_TASK_KEYS:
            raise _error(f"{PARAM}.{key}", "only applies to built-in tasks; a job trains on "
                         "its whole training_file and evaluates on its whole validation_file")
        if key not in OPENAI_KEYS and key not in USER_KEYS:
            raise _error(f"{PARAM}.{key}", "unknown hyperparameter; accepted: "
                         + ", ".join((*OPENAI_KEYS, DEVICE_KEY, *USER_KEYS)))


def resolve_hyperparameters(raw: object, *, training_rows: int,
                            limits: JobLimits | None = None) -> Hyperparameters:
    """Map and validate `method.reinforcement.hyperparameters` (None: all defaults) for a
    training file of `training_rows` rows, within the operator's `limits` (None: only
    TrainConfig's own bounds); raises InvalidRequestError naming the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _error(PARAM, f"must be an object, got {raw!r}")
    _check_keys(raw)
    openai = _openai_fields(raw)
    device = _device_kind(raw)
    for ours, theirs in ALIASES:
        if openai.get(ours) is not None and theirs in raw:
            raise _error(f"{PARAM}.{theirs}", f"conflicts with {ours}: send one of them")
    config: dict[str, Any] = {key: _extension(key, raw[key], f"{PARAM}.{key}")
                              for key in USER_KEYS if key in raw and key not in OPENAI_KEYS}
    for key, value in JOB_DEFAULTS.items():
        config.setdefault(key, value)
    if openai["eval_interval"] is not None:
        config["eval_interval"] = openai["eval_interval"]
    if openai["eval_samples"] is not None:
        config["eval_k"] = openai["eval_samples"]
    if openai["batch_size"] is not None:
        config["prompts_per_step"] = openai["batch_size"]
    if openai["learning_rate_multiplier"] is not None:
        config["learning_rate"] = openai["learning_rate_multiplier"] * _DEFAULTS.learning_rate
    prompts = int(config.get("prompts_per_step", _DEFAULTS.prompts_per_step))
    if openai["n_epochs"] is not None:
        config["steps"] = max(1, math.ceil(openai["n_epochs"] * training_rows / prompts))
    try:
        trainer = TrainConfig.from_dict(config)
    except ConfigError as exc:
        param = _config_param(exc, openai)
        raise InvalidRequestError(f"{param}: {exc}", param=param) from None
    if limits is not None:
        _check_limits(trainer, raw, limits)
    full = trainer.to_dict()
    n_epochs = (openai["n_epochs"] if openai["n_epochs"] is not None
                else _round(trainer.steps * trainer.prompts_per_step / max(1, training_rows)))
    summary = {"batch_size": trainer.prompts_per_step,
               "learning_rate_multiplier": _round(trainer.learning_rate
                                                  / _DEFAULTS.learning_rate),
               "n_epochs": n_epochs}
    echo = {**summary, "eval_interval": trainer.eval_interval, "eval_samples": trainer.eval_k,
            "reasoning_effort": "default", "compute_multiplier": 1, DEVICE_KEY: device,
            **{key: full[key] for key in USER_KEYS}}
    stored = {k: v for k, v in full.items() if k not in SERVER_KEYS}
    return Hyperparameters(config=stored, echo=echo, summary=summary,
                           total_steps=trainer.steps, device=device,
                           processes=trainer.num_processes,
                           warnings=tuple(trainer.warnings()))


def job_processes(method: object) -> int:
    """The processes a job asked for, from its stored `method` (the echo of
    method.reinforcement.hyperparameters.num_processes); 1 for jobs created before the key
    existed (or anything unreadable: such a job still runs, on one device)."""
    if not isinstance(method, Mapping):
        return 1
    reinforcement = method.get("reinforcement")
    hyper = reinforcement.get("hyperparameters") if isinstance(reinforcement, Mapping) else None
    n = hyper.get("num_processes") if isinstance(hyper, Mapping) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def job_defaults() -> dict[str, Any]:
    """{name: default} of the TrainConfig fields a job may set, as a job gets them
    (TrainConfig's defaults under JOB_DEFAULTS); nested sections (`paec`, `loss`) are left
    out: their own schemas carry their fields' defaults."""
    full = _DEFAULTS.to_dict()
    return {key: JOB_DEFAULTS.get(key, full[key]) for key in USER_KEYS
            if not isinstance(full[key], dict)}
