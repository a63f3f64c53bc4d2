"""paec.grading.specs: what validation refuses, and that the error names the field path; the
bounds on nesting, grader count and size."""

from __future__ import annotations

from typing import Any

import pytest

from paec.errors import GraderError
from paec.grading.graders import build_grader
from paec.grading.specs import MAX_GRADER_CHARS, MAX_GRADER_DEPTH, MAX_GRADERS, validate_grader


def string_check(operation: str = "eq", reference: str = "{{ item.answer }}") -> dict[str, Any]:
    return {"type": "string_check", "name": "acc", "input": "{{ sample.output_text }}",
            "reference": reference, "operation": operation}


def test_validation_error_names_the_field_path_inside_multi() -> None:
    spec = {"type": "multi", "name": "m", "calculate_output": "acc",
            "graders": {"acc": string_check("equals")}}
    with pytest.raises(GraderError) as info:
        validate_grader(spec)
    assert str(info.value).startswith(
        "grader.graders.acc.operation: must be one of eq, ne, like, ilike")


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "string_check", "name": "a", "input": "x", "operation": "eq"},
     "grader.reference: required"),
    ({**string_check(), "extra": 1}, "grader.extra: unknown field"),
    ({**string_check(), "name": 3}, "grader.name: must be a string"),
    ({"type": "score_model", "name": "s"}, "grader.type: 'score_model' is not supported"),
    ({"type": "regex"}, "grader.type: must be one of"),
    ({"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"},
     "grader.graders: must be a grader or a non-empty map"),
])
def test_invalid_specs_are_refused_with_their_path(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(GraderError, match="^" + message.replace(".", r"\.")):
        validate_grader(spec)


def nested(depth: int) -> dict[str, Any]:
    """`depth` graders deep: depth - 1 levels of multi around a string_check."""
    spec = string_check()
    for _ in range(depth - 1):
        spec = {"type": "multi", "name": "m", "graders": {"g": spec}, "calculate_output": "g"}
    return spec


def test_graders_nest_up_to_the_limit() -> None:
    build_grader(nested(MAX_GRADER_DEPTH))


@pytest.mark.parametrize("depth", [9, 300, 5_000])
def test_graders_nested_past_the_limit_are_refused_at_the_first_level_too_deep(
        depth: int) -> None:
    with pytest.raises(GraderError) as info:
        validate_grader(nested(depth))
    assert info.value.path == "grader" + ".graders.g" * MAX_GRADER_DEPTH
    assert f"at most {MAX_GRADER_DEPTH} levels" in str(info.value)


def test_the_single_grader_form_of_multi_counts_its_levels_too() -> None:
    spec = string_check()
    for _ in range(20):
        spec = {"type": "multi", "name": "acc", "graders": spec, "calculate_output": "acc"}
    with pytest.raises(GraderError, match="levels"):
        validate_grader(spec)


def test_too_many_graders_in_all_are_refused() -> None:
    wide = {"type": "multi", "name": "m", "calculate_output": "g0",
            "graders": {f"g{i}": string_check() for i in range(MAX_GRADERS + 1)}}
    with pytest.raises(GraderError) as info:
        validate_grader(wide)
    assert info.value.path.startswith("grader.graders.g") and "in all" in str(info.value)
    wide["graders"] = {f"g{i}": string_check() for i in range(MAX_GRADERS - 1)}
    validate_grader(wide)  # the multi itself is the last one allowed


def test_a_grader_spec_past_the_size_limit_is_refused() -> None:
    with pytest.raises(GraderError, match=r"^grader: is \d+ characters as JSON"):
        validate_grader(string_check(reference="x" * MAX_GRADER_CHARS))
