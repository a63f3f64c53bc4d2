"""paec.grading.evaluation: pass@k against hand cases and brute force, maj@k by equivalence, and
evaluation from a non-main thread (the answer rules themselves: test_answer.py)."""

from __future__ import annotations

import itertools
import math
import threading
from fractions import Fraction

import pytest

from paec.grading.answer import answers_equivalent
from paec.grading.evaluation import (
    avg_at_k,
    evaluate_groups,
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
