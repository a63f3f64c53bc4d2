"""Evaluation metrics for verifiable answers: avg@k, pass@k and maj@k.

A completion is correct when its final answer is equivalent to the reference, and maj@k groups
the answers of k samples by that same equivalence and checks the largest group; both by the
rules of paec.grading.answer, which the `math_verify` grader follows too. Everything here
works in any thread (see paec.grading.answer on math-verify's timeouts).
"""

from __future__ import annotations

from collections.abc import Sequence

from paec.grading.answer import answers_equivalent, extract_final_answer, is_parsable

# ---------------------------------------------------------------------------------------------
# Estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k).

    Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i), the numerically stable product
    form of Chen et al. 2021 (Codex, arXiv 2107.03374), which never forms the binomials.
    """
    if n < 1:
        raise ValueError(f"pass_at_k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        # Every k-subset holds a correct sample.
        return 1.0
    failing = 1.0
    for i in range(n - c + 1, n + 1):
        failing *= 1.0 - k / i
    return 1.0 - failing


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean accuracy over the samples of one problem."""
    if not correct:
        raise ValueError("avg_at_k needs at least one sample")
    return sum(map(bool, correct)) / len(correct)


def maj_at_k(answers: Sequence[str | None], reference: str, *, k: int | None = None) -> float:
    """1.0 if the majority answer among the first k (default all) is equivalent to the
    reference, else 0.0; 0.0 when no answer can be parsed. See `majority_answer`."""
    winner = majority_answer(answers, k=k)
    return 1.0 if winner is not None and answers_equivalent(winner, reference) else 0.0


def majority_answer(answers: Sequence[str | None], *, k: int | None = None) -> str | None:
    """The most frequent answer among the first k (default all), answers grouped by
    mathematical equivalence; a group is represented by its first answer.

    None and unparsable answers never vote. Ties go to the group whose first answer came
    first, so the result does not depend on anything but the order of the samples.
    """
    window = _first_k(answers, k)
    representatives: list[str] = []
    counts: list[int] = []
    group_of: dict[str, int] = {}  # exact-string fast path: answer -> its group
    for raw in window:
        if raw is None:
            continue
        answer = raw.strip()
        if answer in group_of:
            counts[group_of[answer]] += 1
            continue
        if not is_parsable(answer):
            continue
        g = next((i for i, rep in enumerate(representatives)
                  if answers_equivalent(answer, rep)), len(representatives))
        if g == len(representatives):
            representatives.append(answer)
            counts.append(0)
        group_of[answer] = g
        counts[g] += 1
    if not counts:
        return None
    # max returns the first maximal element: the earliest group wins a tie.
    best = max(range(len(counts)), key=counts.__getitem__)
    return representatives[best]


def _first_k(answers: Sequence[str | None], k: int | None) -> Sequence[str | None]:
    if k is None:
        return answers
    if not 1 <= k <= len(answers):
        raise ValueError(f"k must be in [1, {len(answers)}] (the number of answers), got {k}")
    return answers[:k]


# ---------------------------------------------------------------------------------------------
# Evaluation of sampled completions


def evaluate_groups(groups: Sequence[tuple[Sequence[str], str]], k: int) -> dict[str, float]:
    """avg@k, pass@k and maj@k averaged over problems.

    Each group is (the n >= k completions of one problem, its reference answer). pass@k is
    the unbiased estimate from all n samples; avg@k is the mean accuracy of all n (the
    unbiased estimate of the k-sample mean); maj@k votes among the first k. Keys carry k:
    ``eval/avg@8``, ``eval/pass@8``, ``eval/maj@8``.
    """
    if not groups:
        raise ValueError("evaluate_groups needs at least one problem")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    avg = passed = majority = 0.0
    for i, (completions, reference) in enumerate(groups):
        n = len(completions)
        if n < k:
            raise ValueError(f"problem {i} has {n} completions, fewer than k={k}")
        answers = [extract_final_answer(c) for c in completions]
        correct = [a is not None and answers_equivalent(a, reference) for a in answers]
        avg += avg_at_k(correct)
        passed += pass_at_k(n, sum(correct), k)
        majority += maj_at_k(answers, reference, k=k)
    m = len(groups)
    return {f"eval/avg@{k}": avg / m, f"eval/pass@{k}": passed / m,
            f"eval/maj@{k}": majority / m}
