"""paec.grading.answer: the one rule set for final answers and their equivalence, which the
math_verify grader and evaluation share, and that the sandbox child can load it by path.

Where the grader's and evaluation's former copies disagreed, a test below pins the rule that
won and says why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paec.grading import child
from paec.grading.answer import (
    Problem,
    Verdict,
    answers_equivalent,
    extract_final_answer,
    is_correct,
    is_parsable,
    last_boxed,
    math_verify_score,
)
from paec.grading.child import SampleError

ANSWER_PY = Path(__file__).resolve().parents[3] / "paec" / "grading" / "answer.py"


def score(text: str, reference: str) -> Verdict:
    return math_verify_score(text, reference, timeout_s=5)


# ---------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(("text", "answer"), [
    ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} no, \\boxed{ 2 }", "2"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{5} and then \\boxed{6", "5"),  # the last box is cut off
    ("Put it in \\boxed{}. It is 7", "7"),  # an empty box is no answer
    ("The answer is 42.", "42"),
    ("x = -3", "-3"),
    ("5-3=2", "2"),
    ("half: 0.5", "0.5"),
    ("three quarters, 3/4", "3/4"),
    ("costs $1,234 in total", "1234"),
    ("first 12 then -7.25 at last", "-7.25"),
])
def test_extract_final_answer(text: str, answer: str) -> None:
    assert extract_final_answer(text) == answer


def test_extract_final_answer_without_an_answer() -> None:
    assert extract_final_answer("I do not know.") is None


def test_fbox_counts_as_a_box() -> None:
    # The grader read \fbox, evaluation did not: \fbox won, as the more complete rule (models
    # trained on LaTeX write either).
    assert extract_final_answer("\\boxed{1}, or rather \\fbox{2}") == "2"
    assert is_correct("\\fbox{5}", "5")


def test_an_empty_last_box_is_skipped() -> None:
    # The grader took the last complete box even when empty and scored 0; evaluation skipped
    # it for the box before: skipping won, since an empty box holds no answer.
    assert extract_final_answer("\\boxed{5} and then \\boxed{}") == "5"
    assert score("\\boxed{5} and then \\boxed{ }", "5") == Verdict(1.0)


def test_escaped_braces_neither_open_nor_close_a_box() -> None:
    # The grader counted \{ and \} as braces, so an unbalanced set brace hid the box; evaluation
    # skipped escaped characters: that won, since \{ is a literal brace in LaTeX.
    assert last_boxed("\\boxed{\\left\\{ x \\right.}") == "\\left\\{ x \\right."
    assert last_boxed("\\boxed{\\}}") == "\\}"


def test_box_matching_is_linear_for_a_sample_full_of_unclosed_boxes() -> None:
    text = "\\boxed{" * 50_000 + "\\boxed{7}"
    start = time.perf_counter()
    assert last_boxed(text) == "7"
    assert time.perf_counter() - start < 5  # quadratic scanning took minutes


def test_the_last_number_is_the_fallback_when_math_verify_finds_nothing() -> None:
    # Evaluation fell back to the last number, the grader did not (no_answer): the fallback
    # won, so "[42]" and "answer:42kg" are graded rather than flagged.
    for text in ("[42]", "answer:42kg", "Result=>42<="):
        assert extract_final_answer(text) == "42"
        assert score(text, "42") == Verdict(1.0)


def test_a_long_completion_is_read_from_its_end() -> None:
    # Evaluation skipped math-verify's extraction past 8192 characters (and read "2" from
    # \frac{1}{2}); the grader parsed any length: math-verify now reads the final 8192
    # characters, where the answer is, at a bounded cost.
    text = "x" * 9000 + " the answer is \\frac{1}{2}"
    assert extract_final_answer(text) == "\\frac{1}{2}"
    assert score(text, "0.5") == Verdict(1.0)


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(("a", "b"), [
    ("0.5", "\\frac{1}{2}"), ("1/2", "0.5"), ("3.0", "3"), ("2^{10}", "1024"),
    ("\\sqrt{4}", "2"), ("1,234", "1234"), ("3**2", "9"), ("-3", "-3"),
])
def test_equivalent_answers(a: str, b: str) -> None:
    assert answers_equivalent(a, b)


@pytest.mark.parametrize(("a", "b"), [("0.5", "0.25"), ("3", "-3"), ("2", "\\sqrt{2}")])
def test_different_answers(a: str, b: str) -> None:
    assert not answers_equivalent(a, b)


def test_runaway_expressions_are_compared_as_strings_only() -> None:
    # sympy would evaluate these for ever; the guard makes them plain strings.
    assert not answers_equivalent("9**9**9**9", "3")
    assert not answers_equivalent("9^{9^{9^{9}}}", "3")
    assert not answers_equivalent("(10^{6})!", "3")
    assert answers_equivalent("9**9**9**9", "9**9**9**9")
    assert not is_parsable("9**9**9**9") and is_parsable("3**2")


def test_the_grader_scores_a_runaway_answer_zero_at_once() -> None:
    # The grader ran math-verify on it until its 5 s timeout (a timeout_error); evaluation's
    # guard compared it as a string: the guard won, the cheaper and the same verdict.
    start = time.perf_counter()
    assert score("\\boxed{9^{9^{9^{9}}}}", "3") == Verdict(0.0)
    assert time.perf_counter() - start < 3


def test_a_worked_solution_serves_as_a_reference() -> None:
    # The grader parsed a reference holding a box (math-verify found the box); evaluation
    # compared a long reference as a string: the box rule now reads both sides.
    solution = "We multiply 6 by 7 and check the product twice. " * 5 + "So \\boxed{42}."
    assert answers_equivalent("42", solution)
    assert score("it is \\boxed{42}", solution) == Verdict(1.0)


def test_an_unparsable_reference_still_matches_its_own_string() -> None:
    # The grader flagged any unparsable reference; evaluation let equal strings match: equal
    # strings won (the exact-match fast path); another answer is still bad_reference.
    assert score("\\boxed{??}", "??") == Verdict(1.0)
    assert score("\\boxed{1}", "??") == Verdict(0.0, Problem.BAD_REFERENCE,
                                             "reference '??' could not be parsed")


def test_is_correct() -> None:
    assert is_correct("so \\boxed{\\frac{2}{4}}", "0.5")
    assert not is_correct("no idea", "0.5")


# ------------------------------------------------------------------ the math_verify grader


GRADED = [  # (completion, reference, correct): once checked as grader == evaluation by hand
    ("The answer is 5.", "5", True), ("1 + 4 = 5", "5", True), ("\\boxed{5}", "5", True),
    ("I think it's 6", "5", False), ("The answer is \\frac{1}{2}", "0.5", True),
    ("x = 3, so 2x = 6", "6", True), ("$\\sqrt{4}$", "2", True),
    ("\\boxed{\\frac{3}{4}}", "0.75", True), ("It is 12. Let me check: 7+5=12", "12", True),
    ("The result: 1,000", "1000", True), ("-3", "-3", True), ("5-3=2", "2", True),
    ("answer: 2/4", "1/2", True), ("\\boxed{2} but actually 3", "2", True),
    ("no idea", "4", False), ("3.0", "3", True), ("The sum is 9 and the product 20", "20", True),
    ("The answer is 5 apples.", "5", True),
]


@pytest.mark.parametrize(("completion", "reference", "correct"), GRADED)
def test_the_grader_and_evaluation_give_one_verdict(completion: str, reference: str,
                                                     correct: bool) -> None:
    assert is_correct(completion, reference) is correct
    assert score(completion, reference).score == (1.0 if correct else 0.0)


@pytest.mark.parametrize("garbage", ["no idea, sorry", "", "\\boxed{", "{{{{ }}"])
def test_a_sample_without_an_answer_is_no_answer(garbage: str) -> None:
    verdict = score(garbage, "0.5")
    assert verdict == Verdict(0.0, Problem.NO_ANSWER, "no answer found in the sample")


def test_the_grader_problems_are_sample_errors() -> None:
    assert {p.value for p in Problem} <= {e.value for e in SampleError}
    outcome = child.outcome_of(Verdict(0.0, Problem.NO_ANSWER, "none"), 0.5)
    assert (outcome.error, outcome.detail, outcome.elapsed_s) == (SampleError.NO_ANSWER,
                                                                  "none", 0.5)


# ------------------------------------------------------------------- the sandbox child


def test_answer_imports_only_the_standard_library_at_module_level() -> None:
    # The child runs `python -I -S`-like: paec is not importable there, math-verify loads lazily.
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('a', {str(ANSWER_PY)!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['a'] = m; "
            "spec.loader.exec_module(m); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in "
            "{'paec', 'math_verify', 'sympy', 'torch', 'numpy'}))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_child_script_loads_answer_by_its_path() -> None:
    # Unisolated and run by path with -I, as the math-verify fallback runs it: the script's
    # folder is not on sys.path, so only loading answer.py by its path can work.
    request = {"kind": "math_verify", "pairs": [["\\boxed{\\frac{1}{2}}", "0.5"], ["nothing", "1"]],
               "sample_timeout_s": 10, "uid": None,
               "limits": {"memory_bytes": 2 << 30, "cpu_s": 60, "max_open_files": 64,
                          "max_processes": None, "max_file_bytes": 1 << 20}}
    done = subprocess.run([sys.executable, "-I", str(Path(child.__file__))],
                          input=json.dumps(request), capture_output=True, text=True,
                          timeout=60, cwd="/")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(m["i"], m["score"], m["error"]) for m in lines] == [
        ("ready", 0.0, None), (0, 1.0, None), (1, 0.0, "no_answer")], done.stderr


@pytest.mark.parametrize(("completion", "reference", "right"), [
    ("23 - 12 equals \\boxed{}21", "11", False),  # math-verify reads "23 - 12": undone
    ("The answer: 23 - 12", "11", False),
    ("\\boxed{23-12}", "11", False),
    ("\\boxed{3 \\times 4}", "12", False),
    ("\\boxed{(2) + (3)}", "5", False),
    ("\\boxed{11}", "11", True),
    ("\\boxed{-11}", "-11", True),  # a signed integer is an answer, not arithmetic
    ("\\boxed{3/4}", "0.75", True),  # a fraction is an answer
    ("\\boxed{2^{10}}", "1024", True),  # a power is not integer arithmetic left undone
    ("\\boxed{3 + 4}", "3 + 4", True),  # the identical string still matches
])
def test_integer_arithmetic_left_undone_is_no_answer(completion: str, reference: str,
                                                     right: bool) -> None:
    """A completion that restates its problem ("23 - 12 equals ...") was paid by math-verify,
    which evaluates the expression it extracts: a policy learnt to do it (the reproduction's
    first run, 2026-12-06). Undone integer arithmetic now matches only its own string, in
    the grader and in evaluation alike."""
    assert is_correct(completion, reference) is right
    assert math_verify_score(completion, reference, timeout_s=5).score == float(right)
