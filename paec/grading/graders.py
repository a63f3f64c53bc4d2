"""Reward graders with OpenAI's shapes: string_check, text_similarity, python, multi, and our own
math_verify, built from the specs of paec.grading.specs.

    grader = build_grader({"type": "string_check", "name": "acc", "operation": "eq",
                           "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"})
    results, metrics = grade_batch(grader, samples, items)

`Grader.grade` never raises for a problem in a sample, an item or user code: it returns reward
0.0 with an error flag (the RunGraderResponse error names, plus `timeout_error`).

Specs and their validation live in paec.grading.specs, templates in paec.grading.templates,
multi's `calculate_output` formula in paec.grading.formula, the math_verify rules in
paec.grading.answer and GraderError in paec.errors; this module re-exports the names the
service imports from here (GraderError, GraderSpec, validate_grader).

Threads: math-verify's own timeouts use SIGALRM, which only a main thread may use. In the main
thread math_verify grades in-process with those timeouts; in any other thread a batch is
graded in one child process (paec.grading.sandbox) whose alarm and wall clock bound it.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paec.errors import GraderError, SandboxError
from paec.grading.sandbox import (
    DEFAULT_LIMITS,
    MATH_VERIFY_LIMITS,
    SampleError,
    SampleOutcome,
    SandboxLimits,
    check_python_source,
    math_verify_in_process,
    run_math_verify,
    run_python_grader,
)
from paec.grading.specs import (
    GraderSpec,
    MathVerifySpec,
    MultiSpec,
    PythonSpec,
    StringCheckSpec,
    StringOperation,
    TextSimilaritySpec,
    validate_grader,
)
from paec.grading.templates import VariableError

__all__ = [
    "ERROR_KEYS", "GradeResult", "Grader", "MathVerifyGrader", "MultiGrader", "PythonGrader",
    "StringCheckGrader", "TextSimilarityGrader", "build_grader", "fuzzy_match", "grade_batch",
    "lcs_length",
]

ERROR_KEYS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
    "model_grader_refusal_error", "model_grader_server_error", "other_error",
    "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
    "truncated_observation_error", "unresponsive_reward_error", "timeout_error",
)
"""The boolean error flags of OpenAI's RunGraderResponse (docs/openai.md 3.10), plus our
`timeout_error`."""


@dataclass(frozen=True)
class GradeResult:
    """One sample's grade: reward 0.0 with error flags set when grading failed."""

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    """multi: each sub-grader's reward by its key; empty for other graders."""
    errors: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(ERROR_KEYS, False))
    """Every key of ERROR_KEYS."""
    error_details: str | None = None
    execution_time: float = 0.0
    """Seconds spent grading this sample (in the sandbox, for python graders)."""

    @property
    def has_error(self) -> bool:
        return any(self.errors.values())


def _failed(flag: str, detail: str | None, elapsed: float = 0.0) -> GradeResult:
    return GradeResult(0.0, errors={key: key == flag for key in ERROR_KEYS},
                       error_details=detail, execution_time=elapsed)


# ---- similarity ----

def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyrö): one
    big-integer step per element of `b`, so long texts cost O(len(b) * len(a) / 64) words."""
    masks: dict[object, int] = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full  # bit i clear: a[i] is matched in the LCS so far
    for y in b:
        u = v & masks.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def fuzzy_match(a: str, b: str) -> float:
    """Normalised InDel similarity in [0, 1]: 2 * LCS(a, b) / (len(a) + len(b)), 1.0 for two
    empty strings. It equals rapidfuzz's `fuzz.ratio(a, b) / 100` (case-sensitive, no
    preprocessing); difflib's ratio is a heuristic approximation of it, hence not used."""
    if not a and not b:
        return 1.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))


# ---- graders ----

class Grader(ABC):
    """A built grader. `grade_many` grades a batch; `grade` is a batch of one."""

    def __init__(self, spec: GraderSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def grade(self, sample_text: str, item: Mapping[str, Any]) -> GradeResult:
        return self.grade_many([sample_text], [item])[0]

    def grade_many(self, samples: Sequence[str],
                   items: Sequence[Mapping[str, Any]]) -> list[GradeResult]:
        """One result per sample; raises only ValueError when the lengths differ."""
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items")
        start = time.perf_counter()
        try:
            return self._grade_many(samples, items)
        except Exception as exc:  # a bug of ours must not crash a training step either
            elapsed = (time.perf_counter() - start) / max(1, len(samples))
            return [_failed("other_error", f"{type(exc).__name__}: {exc}", elapsed)
                    for _ in samples]

    @abstractmethod
    def _grade_many(self, samples: Sequence[str],
                    items: Sequence[Mapping[str, Any]]) -> list[GradeResult]: ...


class _TemplateGrader(Grader):
    """A grader of the rendered `input` against the rendered `reference`."""

    spec: StringCheckSpec | TextSimilaritySpec | MathVerifySpec

    def _grade_many(self, samples: Sequence[str],
                    items: Sequence[Mapping[str, Any]]) -> list[GradeResult]:
        results: list[GradeResult | None] = []
        pairs: list[tuple[str, str]] = []
        for text, item in zip(samples, items, strict=True):
            try:
                pairs.append((self.spec.input.render(text, item),
                              self.spec.reference.render(text, item)))
                results.append(None)
            except VariableError as exc:
                results.append(_failed(exc.flag, str(exc)))
        scored = iter(self._score_pairs(pairs) if pairs else [])
        return [r if r is not None else next(scored) for r in results]

    def _score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[GradeResult]:
        results = []
        for text, reference in pairs:
            start = time.perf_counter()
            reward = self._score(text, reference)
            results.append(GradeResult(reward, execution_time=time.perf_counter() - start))
        return results

    def _score(self, text: str, reference: str) -> float:
        raise NotImplementedError


class StringCheckGrader(_TemplateGrader):
    spec: StringCheckSpec

    def _score(self, text: str, reference: str) -> float:
        op = self.spec.operation
        hit = {StringOperation.EQ: text == reference, StringOperation.NE: text != reference,
               StringOperation.LIKE: reference in text,
               StringOperation.ILIKE: reference.casefold() in text.casefold()}[op]
        return 1.0 if hit else 0.0


class TextSimilarityGrader(_TemplateGrader):
    spec: TextSimilaritySpec

    def _score(self, text: str, reference: str) -> float:
        return fuzzy_match(text, reference)  # the only metric validation lets through


_MATH_ERRORS = {SampleError.NO_ANSWER: "sample_parse_error", SampleError.TIMEOUT: "timeout_error"}


class MathVerifyGrader(_TemplateGrader):
    """math-verify equivalence of the rendered input's final answer and the rendered reference
    (paec.grading.answer.math_verify_score). In-process with math-verify's SIGALRM timeouts in
    the main thread; a child process per batch in any other thread."""

    spec: MathVerifySpec

    def __init__(self, spec: MathVerifySpec, limits: SandboxLimits = MATH_VERIFY_LIMITS) -> None:
        super().__init__(spec)
        self.limits = limits

    def _score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[GradeResult]:
        if threading.current_thread() is threading.main_thread():
            outcomes = math_verify_in_process(pairs)
        else:
            outcomes = run_math_verify(pairs, self.limits)
        return [_from_outcome(o, _MATH_ERRORS, "other_error") for o in outcomes]


def _from_outcome(outcome: SampleOutcome, flags: Mapping[SampleError, str],
                  default_flag: str) -> GradeResult:
    if outcome.error is None:
        return GradeResult(outcome.score, execution_time=outcome.elapsed_s)
    return _failed(flags.get(outcome.error, default_flag), outcome.detail, outcome.elapsed_s)


_PYTHON_ERRORS = {SampleError.RUNTIME: "python_grader_runtime_error",
                  SampleError.TIMEOUT: "timeout_error"}


class PythonGrader(Grader):
    """The user's `grade(sample, item)`, a whole batch per sandbox process. `sample` is
    `{"output_text": str, "output_json": the text parsed as JSON, or None}`."""

    spec: PythonSpec

    def __init__(self, spec: PythonSpec, limits: SandboxLimits = DEFAULT_LIMITS) -> None:
        super().__init__(spec)
        self.limits = limits

    def _grade_many(self, samples: Sequence[str],
                    items: Sequence[Mapping[str, Any]]) -> list[GradeResult]:
        results: list[GradeResult | None] = []
        pairs = []
        for text, item in zip(samples, items, strict=True):
            try:
                output_json = json.loads(text)
            except ValueError:
                output_json = None
            pair = ({"output_text": text, "output_json": output_json}, dict(item))
            try:
                json.dumps(pair)
            except (TypeError, ValueError) as exc:
                results.append(_failed("other_error", f"item is not JSON-serialisable: {exc}"))
                continue
            pairs.append(pair)
            results.append(None)
        outcomes = iter(run_python_grader(self.spec.source, pairs, self.limits) if pairs else [])
        return [r if r is not None
                else _from_outcome(next(outcomes), _PYTHON_ERRORS, "python_grader_server_error")
                for r in results]


class MultiGrader(Grader):
    """Sub-graders, each over the whole batch, combined per sample by `calculate_output`. A
    failed sub-grader counts as 0.0 in the formula and its error flags carry over."""

    spec: MultiSpec

    def __init__(self, spec: MultiSpec, graders: Mapping[str, Grader]) -> None:
        super().__init__(spec)
        self.graders = dict(graders)

    def _grade_many(self, samples: Sequence[str],
                    items: Sequence[Mapping[str, Any]]) -> list[GradeResult]:
        subs = {key: g.grade_many(samples, items) for key, g in self.graders.items()}
        results = []
        for i in range(len(samples)):
            start = time.perf_counter()
            mine = {key: rs[i] for key, rs in subs.items()}
            rewards = {key: r.reward for key, r in mine.items()}
            errors = {k: any(r.errors[k] for r in mine.values()) for k in ERROR_KEYS}
            details = [f"{key}: {r.error_details}" for key, r in mine.items() if r.error_details]
            try:
                reward = self.spec.calculate_output.evaluate(rewards)
                if not math.isfinite(reward):
                    raise ValueError(f"result is {reward}")
            except (ArithmeticError, ValueError) as exc:
                reward, errors["other_error"] = 0.0, True
                details.append(f"calculate_output: {type(exc).__name__}: {exc}")
            elapsed = time.perf_counter() - start + sum(r.execution_time for r in mine.values())
            results.append(GradeResult(reward, rewards, errors,
                                       "; ".join(details) if details else None, elapsed))
        return results


def build_grader(spec: Mapping[str, Any] | GraderSpec, *, allow_python: bool = False,
                 limits: SandboxLimits = DEFAULT_LIMITS) -> Grader:
    """A grader from an OpenAI grader object (validated) or a spec.

    python graders are refused unless `allow_python`; their source is loaded once in the
    sandbox (`limits`) here, so a source that does not compile or defines no `grade` fails now.
    """
    checked = validate_grader(spec) if isinstance(spec, Mapping) else spec
    return _build(checked, allow_python, limits, "grader")


def _build(spec: GraderSpec, allow_python: bool, limits: SandboxLimits, path: str) -> Grader:
    if isinstance(spec, StringCheckSpec):
        return StringCheckGrader(spec)
    if isinstance(spec, TextSimilaritySpec):
        return TextSimilarityGrader(spec)
    if isinstance(spec, MathVerifySpec):
        return MathVerifyGrader(spec)
    if isinstance(spec, PythonSpec):
        if not allow_python:
            raise GraderError(path, "python graders are disabled (allow_python=False)")
        try:
            check_python_source(spec.source, limits)
        except SandboxError as exc:
            raise GraderError(f"{path}.source", str(exc)) from None
        return PythonGrader(spec, limits)
    subs = {key: _build(sub, allow_python, limits, f"{path}.graders.{key}")
            for key, sub in spec.graders.items()}
    return MultiGrader(spec, subs)


def grade_batch(grader: Grader, samples: Sequence[str], items: Sequence[Mapping[str, Any]],
                ) -> tuple[list[GradeResult], dict[str, float]]:
    """Grade a batch; return the results and their metrics (`batch_metrics`)."""
    results = grader.grade_many(samples, items)
    return results, batch_metrics(grader, results)


def batch_metrics(grader: Grader, results: Sequence[GradeResult]) -> dict[str, float]:
    """The metrics of a batch's grades (of one process, or gathered from several):

    reward/mean, reward/std: over the batch (population std, 0.0 for one sample);
    grader/<key>/mean: mean reward of each sub-grader of a multi grader;
    grader/errors: samples with any error flag; grader/error_rate: that over the batch size;
    grader/timeouts: samples with timeout_error; grader/sample_parse_errors: samples whose
    output had no answer to grade (the model's fault, not the grader's). An empty batch gives
    zeros.
    """
    rewards = [r.reward for r in results]
    n = len(results)
    errors = sum(r.has_error for r in results)
    metrics = {
        "reward/mean": statistics.fmean(rewards) if n else 0.0,
        "reward/std": statistics.pstdev(rewards) if n else 0.0,
        "grader/errors": float(errors),
        "grader/error_rate": errors / n if n else 0.0,
        "grader/timeouts": float(sum(r.errors["timeout_error"] for r in results)),
        "grader/sample_parse_errors": float(sum(r.errors["sample_parse_error"]
                                                for r in results)),
    }
    if isinstance(grader, MultiGrader):
        for key in grader.graders:
            metrics[f"grader/{key}/mean"] = (statistics.fmean(r.sub_rewards[key] for r in results)
                                             if n else 0.0)
    return metrics
