"""paec.grading.evaluation: pass@k against hand cases and brute force, maj@k by equivalence, answer
extraction, and evaluation from a non-main thread."""

from __future__ import annotations

import itertools
import math
import threading
from fractions import Fraction

import pytest

from paec.grading.evaluation import (
    answers_equivalent,
    avg_at_k,
    evaluate_groups,
    extract_final_answer,
    is_correct,
    maj_at_k,
    majority_answer,
    pass_at_k,
)

# ---------------------------------------------------------------------------------- pass@k


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The share of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def test_pass_at_k_hand_case() -> None:
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)


def test_pass_at_1_is_the_accuracy() -> None:
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_brute_force(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)),
                                                       abs=1e-12)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(6, 0, 3) == 0.0
    assert pass_at_k(6, 6, 3) == 1.0
    assert pass_at_k(6, 1, 6) == 1.0  # k = n: any correct sample is in the only subset


def test_pass_at_k_is_stable_for_large_n() -> None:
    value = pass_at_k(1000, 3, 100)
    assert value == pytest.approx(1 - math.comb(997, 100) / math.comb(1000, 100), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 2, 5), (4, 5, 2), (4, -1, 2), (4, 2, 0), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k() -> None:
    assert avg_at_k([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([])


# ---------------------------------------------------------------------------------- answers


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


def test_is_correct() -> None:
    assert is_correct("so \\boxed{\\frac{2}{4}}", "0.5")
    assert not is_correct("no idea", "0.5")


# ------------------------------------------------------------------------------------ maj@k


def test_equivalent_forms_make_a_majority() -> None:
    answers = ["3", "0.5", "\\frac{1}{2}", "4", "1/2", "3"]
    assert majority_answer(answers) == "0.5"
    assert maj_at_k(answers, "1/2") == 1.0
    assert maj_at_k(answers, "3") == 0.0


def test_maj_at_k_looks_at_the_first_k_only() -> None:
    answers = ["3", "3", "1/2", "0.5", "\\frac{1}{2}"]
    assert maj_at_k(answers, "3", k=3) == 1.0
    assert maj_at_k(answers, "3") == 0.0


def test_ties_go_to_the_first_answer() -> None:
    assert majority_answer(["4", "3", "3", "4"]) == "4"
    assert maj_at_k(["4", "3", "3", "4"], "4") == 1.0
    assert maj_at_k(["3", "4", "4", "3"], "4") == 0.0


def test_none_answers_never_win() -> None:
    assert majority_answer([None, None, "7", None]) == "7"
    assert maj_at_k([None, None, "7", None], "7") == 1.0


def test_all_none_scores_zero() -> None:
    assert majority_answer([None, None]) is None
    assert maj_at_k([None, None], "7") == 0.0


def test_maj_at_k_rejects_k_beyond_the_answers() -> None:
    with pytest.raises(ValueError):
        maj_at_k(["1"], "1", k=2)


# ----------------------------------------------------------------------------- evaluation


GROUPS = [
    # 2 of 4 correct; the first two vote 0.5 (equivalent to 1/2).
    (["\\boxed{0.5}", "so 1/2", "\\boxed{2}", "I give up"], "\\frac{1}{2}"),
    # 1 of 4 correct; the first two vote 5, which is wrong.
    (["5", "\\boxed{5}", "\\boxed{6}", "\\boxed{4}"], "6"),
]


def expected_metrics() -> dict[str, float]:
    return {"eval/avg@2": (2 / 4 + 1 / 4) / 2,
            "eval/pass@2": (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2,
            "eval/maj@2": (1.0 + 0.0) / 2}


def test_evaluate_groups_hand_case() -> None:
    metrics = evaluate_groups(GROUPS, 2)
    assert metrics.keys() == expected_metrics().keys()
    for key, value in expected_metrics().items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["eval/pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_evaluate_groups_in_a_thread() -> None:
    # math-verify's timeouts use SIGALRM, which raises outside the main thread.
    results: list[dict[str, float]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(evaluate_groups(GROUPS, 2))
            # Answers never seen before, so math-verify really runs in this thread.
            results.append({"fresh": float(answers_equivalent("\\frac{6}{8}", "0.75"))})
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not errors and not thread.is_alive()
    assert results[0] == pytest.approx(expected_metrics())
    assert results[1] == {"fresh": 1.0}


def test_evaluate_groups_needs_k_completions() -> None:
    with pytest.raises(ValueError, match="fewer than k=5"):
        evaluate_groups(GROUPS, 5)


AGREEMENT_CASES = [
    ("The answer is 5.", "5"), ("1 + 4 = 5", "5"), ("\\boxed{5}", "5"), ("I think it's 6", "5"),
    ("The answer is \\frac{1}{2}", "0.5"), ("x = 3, so 2x = 6", "6"), ("$\\sqrt{4}$", "2"),
    ("\\boxed{\\frac{3}{4}}", "0.75"), ("It is 12. Let me check: 7+5=12", "12"),
    ("The result: 1,000", "1000"), ("-3", "-3"), ("5-3=2", "2"), ("answer: 2/4", "1/2"),
    ("\\boxed{2} but actually 3", "2"), ("no idea", "4"), ("3.0", "3"),
    ("The sum is 9 and the product 20", "20"), ("The answer is 5 apples.", "5"),
]


@pytest.mark.parametrize(("completion", "reference"), AGREEMENT_CASES)
def test_evaluation_and_the_math_verify_grader_agree(completion: str, reference: str) -> None:
    # One notion of "correct": a completion counted right in avg@k / pass@k is one the
    # training reward (the math_verify grader) pays 1 for, and the other way round.
    from paec.grading.sandbox import math_verify_score

    graded = math_verify_score(completion, reference, timeout_s=5).score == 1.0
    assert is_correct(completion, reference) is graded
