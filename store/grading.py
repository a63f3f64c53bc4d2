"""Grader specs as the service accepts them, and the grader dry run (OpenAI
`fine_tuning.alpha.graders.validate` and `.run`, docs/openai.md 3.9, 3.10).

`validate_grader_spec` is the one gate for a grader that reaches the service, here and in a
job's `method.reinforcement.grader`: paec's own validation (so that what the API accepts is
what the trainer runs), the `allow_python_graders` switch, and for python graders a sandboxed
load of the source. `run_grader` grades one sample as training would; a problem in the sample,
the item or the user's code is a reward of 0.0 with an error flag, never an exception.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from paec.errors import GraderError
from paec.grading.graders import (
    ERROR_KEYS,
    Grader,
    GradeResult,
    build_grader,
    grade_batch,
)
from paec.grading.specs import (
    MAX_GRADER_CHARS,
    MAX_GRADER_DEPTH,
    SUPPORTED_METRICS,
    GraderSpec,
    StringOperation,
    validate_grader,
)
from store.errors import InvalidRequestError
from store.settings import Settings

OPENAI_ERROR_FLAGS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
    "model_grader_refusal_error", "model_grader_server_error", "other_error",
    "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
    "truncated_observation_error", "unresponsive_reward_error",
)
"""The boolean flags of RunGraderResponse.metadata.errors (docs/openai.md 3.10)."""
STRING_OPERATIONS = tuple(operation.value for operation in StringOperation)
"""string_check's `operation`s."""
SIMILARITY_METRICS = SUPPORTED_METRICS
"""text_similarity's `evaluation_metric`s implemented here (of OpenAI's, only fuzzy_match)."""
GRADER_DEPTH = MAX_GRADER_DEPTH
"""Levels of `multi` a grader may nest (a plain grader is level 1)."""
GRADER_CHARS = MAX_GRADER_CHARS
"""Characters a grader may have as JSON."""
RUN_WORKERS = 4
"""Dry runs that grade at once; more wait their turn (within their time limit)."""


def _rebase(path: str, prefix: str) -> str:
    # paec's build_grader names fields from "grader"; callers may nest the grader elsewhere.
    return prefix + path[len("grader"):] if path.startswith("grader") else path


def _python_paths(spec: Mapping[str, Any], path: str) -> Iterator[str]:
    """The `.type` path of every python grader in an already validated spec."""
    kind = spec.get("type")
    if kind == "python":
        yield f"{path}.type"
    elif kind == "multi":
        graders = spec["graders"]
        if isinstance(graders.get("type"), str):  # the SDK >= 1.83 single-grader form
            yield from _python_paths(graders, f"{path}.graders")
        else:
            for key, sub in graders.items():
                yield from _python_paths(sub, f"{path}.graders.{key}")


def _check(spec: object, settings: Settings, param_prefix: str) -> tuple[GraderSpec, Grader]:
    if not isinstance(spec, Mapping):
        raise InvalidRequestError(f"{param_prefix} must be an object, got "
                                  f"{type(spec).__name__}", param=param_prefix)
    try:
        checked = validate_grader(spec, path=param_prefix)
    except GraderError as exc:
        raise InvalidRequestError(str(exc), param=exc.path) from None
    if not settings.allow_python_graders:
        path = next(_python_paths(spec, param_prefix), None)
        if path is not None:
            raise InvalidRequestError(f"{path}: python graders are disabled on this server",
                                      param=path)
    try:
        # Loads a python grader's source once in the sandbox: a source that does not compile
        # or defines no grade() is refused now, not a training step later.
        grader = build_grader(checked, allow_python=True)
    except GraderError as exc:
        param = _rebase(exc.path, param_prefix)
        raise InvalidRequestError(f"{param}: {str(exc)[len(exc.path) + 2:]}",
                                  param=param) from None
    return checked, grader


def validate_grader_spec(spec: object, settings: Settings,
                         param_prefix: str = "grader") -> dict[str, Any]:
    """Check a grader object from a request and return it as a plain JSON dict to store.

    `spec` is the decoded JSON value; `param_prefix` is where it sits in the request
    (`grader`, `method.reinforcement.grader`). Raises InvalidRequestError whose `param` is
    the path of the offending field (`grader.operation`, `grader.graders.acc.type`, ...):
    for anything paec.grading.graders.validate_grader refuses, for a python grader when
    `settings.allow_python_graders` is off (param `<path>.type`), and for a python source
    that does not load in the sandbox (param `<path>.source`; this runs a child process).
    """
    _check(spec, settings, param_prefix)
    plain: dict[str, Any] = json.loads(json.dumps(spec))
    return plain


_RUNNER = concurrent.futures.ThreadPoolExecutor(max_workers=RUN_WORKERS,
                                                thread_name_prefix="paec-grader-run")
"""Where dry runs grade: at most RUN_WORKERS at once, whatever the API's own thread pool, so
that a flood of dry runs cannot take every thread of the API."""


def _check_run_inputs(model_sample: str, item: Mapping[str, Any], max_chars: int) -> None:
    """A 400 for a dry run's input past `max_chars`: text_similarity's work grows with the
    product of the two texts' lengths (two 500k-character strings took 23 s of CPU)."""
    if len(model_sample) > max_chars:
        raise InvalidRequestError(f"model_sample has {len(model_sample)} characters; a dry "
                                  f"run takes at most {max_chars} (PAEC_MAX_GRADER_RUN_CHARS)",
                                  param="model_sample")
    try:
        size = len(json.dumps(item))
    except (RecursionError, TypeError, ValueError):
        raise InvalidRequestError("item must be a JSON object of plain values nested a few "
                                  "levels at most", param="item") from None
    if size > max_chars:
        raise InvalidRequestError(f"item has {size} characters as JSON; a dry run takes at "
                                  f"most {max_chars} (PAEC_MAX_GRADER_RUN_CHARS)",
                                  param="item")


def run_grader(spec: object, model_sample: str, item: Mapping[str, Any] | None,
               settings: Settings) -> dict[str, Any]:
    """Grade `model_sample` against `item` (default {}) with the grader; return OpenAI's
    RunGraderResponse.

    An invalid spec raises InvalidRequestError as `validate_grader_spec` does, and so does a
    `model_sample` or `item` (as JSON) longer than `settings.max_grader_run_chars` (param
    `model_sample` / `item`). The grade runs off the request's thread, in a pool of
    RUN_WORKERS, and answers reward 0 with `timeout_error` after
    `settings.grader_run_timeout_s` (the grade itself then still ends, its inputs being
    bounded, but nobody waits for it). A failed grade
    is reward 0.0 with its flag set in `metadata.errors`; a timeout sets our extra flag
    `timeout_error` and OpenAI's `unresponsive_reward_error`. `metadata.error_details` (an
    extra key) says what went wrong, in words.
    """
    item = dict(item or {})
    _check_run_inputs(model_sample, item, settings.max_grader_run_chars)
    checked, grader = _check(spec, settings, "grader")
    start = time.perf_counter()
    future = _RUNNER.submit(grade_batch, grader, [model_sample], [item])
    try:
        result = future.result(timeout=settings.grader_run_timeout_s)[0][0]
    except concurrent.futures.TimeoutError:
        future.cancel()  # a grade not started yet never runs; one running ends by itself
        result = GradeResult(0.0, errors={key: key == "timeout_error" for key in ERROR_KEYS},
                             error_details=f"the dry run took longer than "
                             f"{settings.grader_run_timeout_s:g} s (PAEC_GRADER_RUN_TIMEOUT_S)")
    elapsed = time.perf_counter() - start
    flags = dict(result.errors)
    errors: dict[str, Any] = {key: bool(flags.get(key, False)) for key in OPENAI_ERROR_FLAGS}
    timed_out = bool(flags.get("timeout_error", False))
    errors["unresponsive_reward_error"] = errors["unresponsive_reward_error"] or timed_out
    errors["timeout_error"] = timed_out
    errors["model_grader_server_error_details"] = None
    errors["python_grader_runtime_error_details"] = (
        result.error_details if errors["python_grader_runtime_error"] else None)
    errors["python_grader_server_error_type"] = (
        "sandbox" if errors["python_grader_server_error"] else None)
    return {
        "reward": result.reward,
        "sub_rewards": dict(result.sub_rewards),
        "model_grader_token_usage_per_model": {},
        "metadata": {"name": checked.name, "type": checked.type, "execution_time": elapsed,
                     "scores": dict(result.sub_rewards), "token_usage": None,
                     "sampled_model_name": None, "errors": errors,
                     "error_details": result.error_details},
    }
