"""Grader specs: OpenAI's grader JSON objects (docs/openai.md 3.9, 3.10) checked and
frozen, before anything is built from them (paec.grading.graders).

    spec = validate_grader({"type": "string_check", "name": "acc", "operation": "eq",
                            "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"})

`validate_grader` raises GraderError naming the field path (`grader.graders.acc.operation`).
A spec is bounded before anything recurses: MAX_GRADER_DEPTH levels of `multi`, MAX_GRADERS
graders in all, MAX_GRADER_CHARS characters as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from paec.errors import GraderError
from paec.grading.formula import Formula
from paec.grading.templates import Template


class StringOperation(StrEnum):
    """string_check's comparison of the rendered input with the rendered reference."""

    EQ = "eq"
    NE = "ne"
    LIKE = "like"
    """The input contains the reference (case-sensitive)."""
    ILIKE = "ilike"
    """The input contains the reference, ignoring case."""


SUPPORTED_METRICS = ("fuzzy_match",)
"""text_similarity metrics implemented here; OpenAI's others (cosine, bleu, gleu, meteor,
rouge_*) are rejected when the grader is validated."""


@dataclass(frozen=True)
class StringCheckSpec:
    type: ClassVar[str] = "string_check"
    name: str
    input: Template
    reference: Template
    operation: StringOperation


@dataclass(frozen=True)
class TextSimilaritySpec:
    type: ClassVar[str] = "text_similarity"
    name: str
    input: Template
    reference: Template
    evaluation_metric: str


@dataclass(frozen=True)
class PythonSpec:
    type: ClassVar[str] = "python"
    name: str
    source: str
    image_tag: str | None = None
    """Accepted and ignored: OpenAI's sandbox image; ours is this interpreter."""


@dataclass(frozen=True)
class MathVerifySpec:
    type: ClassVar[str] = "math_verify"
    name: str
    input: Template
    reference: Template


@dataclass(frozen=True)
class MultiSpec:
    type: ClassVar[str] = "multi"
    name: str
    graders: dict[str, GraderSpec]
    calculate_output: Formula


GraderSpec = StringCheckSpec | TextSimilaritySpec | PythonSpec | MathVerifySpec | MultiSpec


def _check_fields(spec: Mapping[str, Any], path: str, required: tuple[str, ...],
                  optional: tuple[str, ...] = ()) -> None:
    for key in required:
        if key not in spec:
            raise GraderError(f"{path}.{key}", "required")
    unknown = sorted(set(spec) - {"type", *required, *optional})
    if unknown:
        raise GraderError(f"{path}.{unknown[0]}", "unknown field")


def _str(spec: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise GraderError(f"{path}.{key}", f"must be a string, got {type(value).__name__}")
    return value


def _templates(spec: Mapping[str, Any], path: str) -> tuple[Template, Template]:
    input_ = _str(spec, "input", path, "{{sample.output_text}}")
    return (Template.parse(input_, f"{path}.input"),
            Template.parse(_str(spec, "reference", path), f"{path}.reference"))


MAX_GRADER_DEPTH = 8
"""Levels of `multi` a grader may nest (a plain grader is level 1). 300 levels were accepted
and every later read of the job answered 500 (issue 15); OpenAI's graders nest one level."""
MAX_GRADERS = 64
"""Graders in one spec, counting every level (each one grades every sample)."""
MAX_GRADER_CHARS = 262_144
"""Size of a grader spec as JSON (python sources included)."""


def validate_grader(spec: Mapping[str, Any], path: str = "grader") -> GraderSpec:
    """The frozen spec of an OpenAI grader object; raises GraderError naming the field.

    Bounded before anything recurses (issue 15): at most MAX_GRADER_DEPTH levels of `multi`,
    MAX_GRADERS graders in all and MAX_GRADER_CHARS characters as JSON."""
    checked = _validate(spec, path, 1, [0])
    try:
        size = len(json.dumps(spec))  # safe now: the depth is bounded
    except (TypeError, ValueError) as exc:
        raise GraderError(path, f"must be plain JSON: {exc}") from None
    if size > MAX_GRADER_CHARS:
        raise GraderError(path, f"is {size} characters as JSON; at most {MAX_GRADER_CHARS} "
                          "are allowed")
    return checked


def _validate(spec: Mapping[str, Any], path: str, depth: int, seen: list[int]) -> GraderSpec:
    """`validate_grader` of the grader at nesting level `depth`; `seen[0]` counts graders."""
    if depth > MAX_GRADER_DEPTH:
        raise GraderError(path, f"graders nest at most {MAX_GRADER_DEPTH} levels deep")
    seen[0] += 1
    if seen[0] > MAX_GRADERS:
        raise GraderError(path, f"a grader holds at most {MAX_GRADERS} graders in all")
    if not isinstance(spec, Mapping):
        raise GraderError(path, f"must be an object, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind in ("score_model", "label_model"):
        raise GraderError(f"{path}.type", f"{kind!r} is not supported (it needs a model server)")
    if kind == "math_verify":
        _check_fields(spec, path, ("name", "reference"), ("input",))
        return MathVerifySpec(_str(spec, "name", path), *_templates(spec, path))
    if kind in ("string_check", "text_similarity"):
        return _validate_comparison(spec, path, kind)
    if kind == "python":
        _check_fields(spec, path, ("name", "source"), ("image_tag",))
        tag = spec.get("image_tag")
        if tag is not None and not isinstance(tag, str):
            raise GraderError(f"{path}.image_tag", "must be a string or null")
        return PythonSpec(_str(spec, "name", path), _str(spec, "source", path), tag)
    if kind == "multi":
        return _validate_multi(spec, path, depth, seen)
    raise GraderError(f"{path}.type", "must be one of string_check, text_similarity, python, "
                      f"multi, math_verify, got {kind!r}")


def _validate_comparison(spec: Mapping[str, Any], path: str,
                         kind: str) -> StringCheckSpec | TextSimilaritySpec:
    """A string_check or text_similarity grader."""
    key = "operation" if kind == "string_check" else "evaluation_metric"
    _check_fields(spec, path, ("name", "input", "reference", key))
    choice = _str(spec, key, path)
    choices = tuple(StringOperation) if kind == "string_check" else SUPPORTED_METRICS
    if choice not in choices:
        raise GraderError(f"{path}.{key}", "must be one of " + ", ".join(choices)
                          + f", got {choice!r}")
    if kind == "string_check":
        return StringCheckSpec(_str(spec, "name", path), *_templates(spec, path),
                               StringOperation(choice))
    return TextSimilaritySpec(_str(spec, "name", path), *_templates(spec, path), choice)


def _validate_multi(spec: Mapping[str, Any], path: str, depth: int, seen: list[int]) -> MultiSpec:
    """A multi grader, its sub-graders one level deeper."""
    _check_fields(spec, path, ("name", "graders", "calculate_output"))
    graders = spec["graders"]
    subs: dict[str, GraderSpec] = {}
    if isinstance(graders, Mapping) and isinstance(graders.get("type"), str):
        # SDK >= 1.83 types `graders` as one grader; the formula names it by its name.
        sub = _validate(graders, f"{path}.graders", depth + 1, seen)
        subs[sub.name] = sub
    elif isinstance(graders, Mapping) and graders:
        for key, value in graders.items():
            subs[str(key)] = _validate(value, f"{path}.graders.{key}", depth + 1, seen)
    else:
        raise GraderError(f"{path}.graders", "must be a grader or a non-empty map of "
                          "name to grader")
    formula = Formula.parse(_str(spec, "calculate_output", path), tuple(subs),
                            f"{path}.calculate_output")
    return MultiSpec(_str(spec, "name", path), subs, formula)
