"""paec.grading.graders and paec.grading.sandbox: every grader on right and wrong samples,
templates, the multi formula (and what it refuses), the python sandbox's limits, math-verify in
any thread, and the batch metrics, all checked against values worked out by hand (spec
validation: test_specs.py)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from paec.errors import GraderError
from paec.grading.graders import (
    ERROR_KEYS,
    GradeResult,
    MultiGrader,
    build_grader,
    fuzzy_match,
    grade_batch,
    lcs_length,
)
from paec.grading.sandbox import SandboxLimits
from paec.grading.specs import validate_grader

FAST = SandboxLimits(sample_timeout_s=1.0)


def string_check(operation: str = "eq", name: str = "acc",
                 input_: str = "{{ sample.output_text }}",
                 reference: str = "{{ item.answer }}") -> dict[str, Any]:
    return {"type": "string_check", "name": name, "input": input_, "reference": reference,
            "operation": operation}


def python(source: str, name: str = "py") -> dict[str, Any]:
    return {"type": "python", "name": name, "source": source}


def flags(result: GradeResult) -> set[str]:
    return {key for key, on in result.errors.items() if on}


# ---- string_check ----

@pytest.mark.parametrize(("operation", "sample", "reference", "reward"), [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0),
    ("ne", "Lyon", "Paris", 1.0), ("ne", "Paris", "Paris", 0.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0),
    ("ilike", "It is PARIS.", "paris", 1.0), ("ilike", "It is Lyon.", "paris", 0.0),
])
def test_string_check_operations(operation: str, sample: str, reference: str,
                                 reward: float) -> None:
    result = build_grader(string_check(operation)).grade(sample, {"answer": reference})
    assert result.reward == reward and not result.has_error
    assert set(result.errors) == set(ERROR_KEYS)


# ---- templates ----

def test_template_reads_nested_item_keys_and_list_indices_whitespace_tolerant() -> None:
    grader = build_grader(string_check(reference="{{item.gold.answers.1}}-{{  item.gold.unit}}"))
    item = {"gold": {"answers": ["x", 42], "unit": "kg"}}
    assert grader.grade("42-kg", item).reward == 1.0
    assert grader.grade("x-kg", item).reward == 0.0


def test_missing_item_key_is_an_invalid_variable_error() -> None:
    result = build_grader(string_check()).grade("Paris", {"question": "capital?"})
    assert result.reward == 0.0 and flags(result) == {"invalid_variable_error"}
    assert result.error_details is not None and "item.answer" in result.error_details


def test_sample_output_json_renders_and_flags_a_sample_that_is_not_json() -> None:
    grader = build_grader(string_check(input_="{{ sample.output_json.city }}",
                                       reference="Paris"))
    assert grader.grade('{"city": "Paris"}', {}).reward == 1.0
    result = grader.grade("Paris", {})
    assert result.reward == 0.0 and flags(result) == {"sample_parse_error"}


@pytest.mark.parametrize("template", ["{{ answer }}", "{{ foo.bar }}", "{{ item }}",
                                      "{{ sample.choices }}", "{{ item..a }}"])
def test_bad_template_variables_are_refused_when_validating(template: str) -> None:
    with pytest.raises(GraderError, match=r"^grader\.reference: "):
        validate_grader(string_check(reference=template))


# ---- text_similarity ----

def test_fuzzy_match_by_hand() -> None:
    # kitten / sitting: LCS "ittn" = 4, so 2 * 4 / (6 + 7).
    assert fuzzy_match("kitten", "sitting") == pytest.approx(8 / 13)
    assert fuzzy_match("abc", "abc") == 1.0 and fuzzy_match("abc", "xyz") == 0.0
    assert fuzzy_match("", "") == 1.0 and fuzzy_match("", "a") == 0.0


def test_lcs_length_matches_the_dynamic_programme() -> None:
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("abc") for _ in range(rng.randrange(0, 90)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randrange(0, 90)))
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = (table[i][j] + 1 if x == y
                                       else max(table[i][j + 1], table[i + 1][j]))
        assert lcs_length(a, b) == table[len(a)][len(b)]


def test_text_similarity_grader_scores_fuzzy_match() -> None:
    grader = build_grader({"type": "text_similarity", "name": "sim",
                           "input": "{{sample.output_text}}", "reference": "{{item.ref}}",
                           "evaluation_metric": "fuzzy_match"})
    assert grader.grade("sitting", {"ref": "kitten"}).reward == pytest.approx(8 / 13)
    assert grader.grade("kitten", {"ref": "kitten"}).reward == 1.0


def test_unsupported_similarity_metric_lists_the_supported_ones() -> None:
    with pytest.raises(GraderError, match=r"evaluation_metric: must be one of fuzzy_match, "
                                          r"got 'bleu'"):
        validate_grader({"type": "text_similarity", "name": "s", "input": "a",
                         "reference": "b", "evaluation_metric": "bleu"})


# ---- multi ----

def multi(formula: str) -> dict[str, Any]:
    return {"type": "multi", "name": "m", "calculate_output": formula,
            "graders": {"acc": string_check("eq", "acc"),
                        "fmt": string_check("like", "fmt", reference="</answer>")}}


def test_multi_formula_by_hand() -> None:
    grader = build_grader(multi("0.5 * acc + 0.5 * fmt"))
    right_unformatted = grader.grade("42", {"answer": "42"})
    assert right_unformatted.reward == 0.5
    assert right_unformatted.sub_rewards == {"acc": 1.0, "fmt": 0.0}
    assert grader.grade("42</answer>", {"answer": "42</answer>"}).reward == 1.0


def test_multi_formula_functions_by_hand() -> None:
    # acc = 1, fmt = 0: max(1, 0) + sqrt(4) - abs(-3) + log(exp(2)) * -(fmt - 1) / 4
    #   = 1 + 2 - 3 + 2 * 1 / 4 = 0.5
    grader = build_grader(multi("max(acc, fmt) + sqrt(4) - abs(-3) "
                                "+ log(exp(2)) * -(fmt - 1) / 4"))
    assert grader.grade("42", {"answer": "42"}).reward == pytest.approx(0.5)


def test_multi_accepts_a_single_grader_named_in_the_formula() -> None:
    spec = {"type": "multi", "name": "m", "calculate_output": "2 * acc",
            "graders": string_check(name="acc")}
    assert build_grader(spec).grade("7", {"answer": "7"}).reward == 2.0


def test_multi_division_by_zero_is_an_error_not_an_exception() -> None:
    result = build_grader(multi("acc / fmt")).grade("1", {"answer": "1"})
    assert result.reward == 0.0 and flags(result) == {"other_error"}
    assert result.error_details is not None and "ZeroDivisionError" in result.error_details


def test_multi_carries_a_sub_graders_error_and_scores_it_zero() -> None:
    result = build_grader(multi("acc + 1")).grade("1", {})
    assert result.reward == 1.0 and result.sub_rewards["acc"] == 0.0
    assert flags(result) == {"invalid_variable_error"}


@pytest.mark.parametrize("formula", [
    "__import__('os')", "__import__('os').system('true')", "acc.__class__", "acc ** 2",
    "[x for x in (1,)]", "lambda: 1", "unknown + 1", "min", "exec('1')", "acc if fmt else 1",
    "'text'", "True + acc", "max(acc, fmt, key=abs)", "sqrt(1, 2)", "-" * 60 + "1", "acc +",
])
def test_unsafe_or_invalid_formulas_are_refused(formula: str) -> None:
    with pytest.raises(GraderError, match=r"^grader\.calculate_output: "):
        validate_grader(multi(formula))


# ---- python ----

GOOD = """
def grade(sample, item):
    return float(sample["output_text"].strip() == item["answer"])
"""


def test_python_graders_are_off_unless_allowed() -> None:
    with pytest.raises(GraderError, match=r"^grader: python graders are disabled"):
        build_grader(python(GOOD))
    nested = {"type": "multi", "name": "m", "calculate_output": "py",
              "graders": {"py": python(GOOD)}}
    with pytest.raises(GraderError, match=r"^grader\.graders\.py: python graders are disabled"):
        build_grader(nested)


def test_python_grader_grades_a_batch() -> None:
    grader = build_grader(python(GOOD), allow_python=True, limits=FAST)
    results, metrics = grade_batch(grader, [" 4", "5", "4"], [{"answer": "4"}] * 3)
    assert [r.reward for r in results] == [1.0, 0.0, 1.0]
    assert metrics["grader/errors"] == 0.0


def test_python_prints_do_not_corrupt_the_results() -> None:
    source = "def grade(sample, item):\n    print('{\"i\": 0, \"score\": 9}')\n    return 0.5\n"
    grader = build_grader(python(source), allow_python=True, limits=FAST)
    assert [r.reward for r in grader.grade_many(["a", "b"], [{}, {}])] == [0.5, 0.5]


@pytest.mark.parametrize(("source", "message"), [
    ("def grade(sample, item) return 1", "SyntaxError"),
    ("x = 1", "must define a function grade"),
    ("def grade(sample): return 1.0", "two arguments"),
    ("raise ImportError('nope')", "ImportError: nope"),
])
def test_python_source_that_cannot_grade_is_refused_at_build(source: str, message: str) -> None:
    with pytest.raises(GraderError, match=r"^grader\.source: .*" + message):
        build_grader(python(source), allow_python=True, limits=FAST)


def test_python_exception_in_one_sample_leaves_the_others_graded() -> None:
    source = GOOD.replace("    return", "    if item['answer'] == 'boom':\n"
                                     "        raise RuntimeError('boom')\n    return")
    grader = build_grader(python(source), allow_python=True, limits=FAST)
    results = grader.grade_many(["4", "x", "5"], [{"answer": "4"}, {"answer": "boom"},
                                                  {"answer": "5"}])
    assert [r.reward for r in results] == [1.0, 0.0, 1.0]
    assert flags(results[1]) == {"python_grader_runtime_error"}
    assert results[1].error_details == "RuntimeError: boom"
    assert not results[0].has_error and not results[2].has_error


def test_python_endless_loop_times_out_with_reward_zero() -> None:
    source = GOOD.replace("    return", "    while item['answer'] == 'loop':\n"
                                     "        pass\n    return")
    grader = build_grader(python(source), allow_python=True, limits=FAST)
    start = time.monotonic()
    results, metrics = grade_batch(grader, ["x", "4"], [{"answer": "loop"}, {"answer": "4"}])
    assert time.monotonic() - start < 10.0
    assert results[0].reward == 0.0 and flags(results[0]) == {"timeout_error"}
    assert results[1].reward == 1.0
    assert metrics["grader/timeouts"] == 1.0


def test_python_batch_wall_clock_kill_keeps_finished_samples() -> None:
    # The loop swallows the per-sample alarm, so only the process's wall clock stops it.
    source = """
import time
def grade(sample, item):
    while item["stuck"]:
        try:
            time.sleep(0.01)
        except BaseException:
            pass
    return 1.0
"""
    limits = SandboxLimits(sample_timeout_s=0.3, batch_timeout_s=2.0)
    grader = build_grader(python(source), allow_python=True, limits=limits)
    results = grader.grade_many(["a", "b", "c"], [{"stuck": False}, {"stuck": True},
                                                  {"stuck": False}])
    assert results[0].reward == 1.0 and not results[0].has_error
    assert [flags(r) for r in results[1:]] == [{"timeout_error"}] * 2


def test_python_process_crash_is_a_server_error_after_the_graded_samples() -> None:
    source = "import os\ndef grade(sample, item):\n    if item['exit']:\n        os._exit(3)\n" \
             "    return 0.25\n"
    grader = build_grader(python(source), allow_python=True, limits=FAST)
    results = grader.grade_many(["a", "b", "c"], [{"exit": False}, {"exit": True},
                                                  {"exit": False}])
    assert results[0].reward == 0.25
    assert [flags(r) for r in results[1:]] == [{"python_grader_server_error"}] * 2


def test_python_allocating_4_gb_hits_the_memory_limit() -> None:
    source = "def grade(sample, item):\n    block = bytearray(4 * 1024 ** 3)\n" \
             "    return float(len(block) > 0)\n"
    grader = build_grader(python(source), allow_python=True, limits=FAST)
    results = grader.grade_many(["a", "b"], [{}, {}])
    assert all(r.reward == 0.0 and flags(r) == {"python_grader_runtime_error"}
               for r in results)
    assert results[0].error_details is not None and "MemoryError" in results[0].error_details


@pytest.mark.parametrize("returned", ["'0.5'", "float('nan')", "True", "None"])
def test_python_non_numeric_or_nan_return_is_a_runtime_error(returned: str) -> None:
    grader = build_grader(python(f"def grade(sample, item):\n    return {returned}\n"),
                          allow_python=True, limits=FAST)
    result = grader.grade("a", {})
    assert result.reward == 0.0 and flags(result) == {"python_grader_runtime_error"}


# ---- math_verify ----

def math_grader() -> Any:
    return build_grader({"type": "math_verify", "name": "math", "reference": "{{ item.answer }}"})


@pytest.mark.parametrize(("sample", "answer", "reward"), [
    (r"So the probability is \boxed{\frac{1}{2}}.", "0.5", 1.0),
    ("First 3 apples, then 4 more: 7", "7", 1.0),
    (r"Tried \boxed{3}, but it is \boxed{x^2+1}", "1 + x^2", 1.0),
    (r"The answer is \boxed{\frac{1}{3}}", "0.5", 0.0),
    ("12 + 30 = 32", "42", 0.0),
])
def test_math_verify_right_and_wrong_answers(sample: str, answer: str, reward: float) -> None:
    result = math_grader().grade(sample, {"answer": answer})
    assert result.reward == reward and not result.has_error


@pytest.mark.parametrize("garbage", ["no idea, sorry", "", r"\boxed{", "{{{{ }}"])
def test_math_verify_garbage_is_a_sample_parse_error(garbage: str) -> None:
    result = math_grader().grade(garbage, {"answer": "0.5"})
    assert result.reward == 0.0 and flags(result) == {"sample_parse_error"}


def test_math_verify_grades_from_a_worker_thread() -> None:
    grader = math_grader()
    out: list[list[GradeResult]] = []
    worker = threading.Thread(target=lambda: out.append(grader.grade_many(
        [r"\boxed{\frac{1}{2}}", "it is 8", "nothing"], [{"answer": "0.5"}] * 3)))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(out) == 1
    assert [r.reward for r in out[0]] == [1.0, 0.0, 0.0]
    assert [flags(r) for r in out[0]] == [set(), set(), {"sample_parse_error"}]


# ---- grade_batch ----

def test_grade_batch_metrics_by_hand() -> None:
    grader = build_grader(multi("0.5 * acc + 0.5 * fmt"))
    assert isinstance(grader, MultiGrader)
    samples = ["1</answer>", "2", "3</answer>", "4"]
    items = [{"answer": "1</answer>"}, {"answer": "2"}, {"answer": "x"}, {}]
    # rewards: 1.0, 0.5, 0.5 (fmt only), 0.0 (acc: missing answer -> error); mean 0.5,
    # population variance (0.25 + 0 + 0 + 0.25) / 4 = 0.125.
    results, metrics = grade_batch(grader, samples, items)
    assert [r.reward for r in results] == [1.0, 0.5, 0.5, 0.0]
    assert metrics == pytest.approx({
        "reward/mean": 0.5, "reward/std": 0.125 ** 0.5, "grader/acc/mean": 0.5,
        "grader/fmt/mean": 0.5, "grader/errors": 1.0, "grader/error_rate": 0.25,
        "grader/timeouts": 0.0, "grader/sample_parse_errors": 0.0})


def test_grade_batch_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 samples but 1 items"):
        grade_batch(build_grader(string_check()), ["a", "b"], [{}])
