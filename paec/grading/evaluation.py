"""Evaluation metrics for verifiable answers: avg@k, pass@k and maj@k.

A completion is correct when its final answer (the last ``\\boxed{...}``, else the last
number) is mathematically equivalent to the reference, as math-verify decides it. maj@k
groups the answers of k samples by that same equivalence and checks the largest group.

math-verify's timeouts use SIGALRM, which only the main thread may set: everything here
works in any thread, using the timeouts only where they are safe and guarding the inputs
that would otherwise hang sympy (see `answers_equivalent`).
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from math_verify import parse, verify  # type: ignore[import-untyped]
from sympy import Add, Basic, Mul, Pow, preorder_traversal  # type: ignore[import-untyped]
from sympy.functions.combinatorial.factorials import factorial  # type: ignore[import-untyped]

_TIMEOUT_S = 5
"""math-verify's own parse and verify timeouts, used where SIGALRM may be used."""
_MAX_ANSWER_CHARS = 200
"""Longer answers are compared as exact strings only: a final answer is short, and sympy's
cost grows with the expression."""
_MAX_EXPONENT = 10_000
"""Answers with a larger numeric exponent (or factorial argument) are compared as exact
strings only: sympy would try to evaluate 9**9**9**9 and never return."""


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
        if not _parse(answer):
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
# Answers


_BOXED = re.compile(r"\\boxed\s*\{")
# An optional minus not glued to a preceding word or number ("5-3" ends in 3, not -3);
# digits with optional thousands commas; an optional decimal part or /denominator.
_NUMBER = re.compile(r"(?<![\w.])(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+|/\d+)?")


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion: the content of the last complete, non-empty
    ``\\boxed{...}`` (braces balanced, ``\\{`` skipped); else what math-verify extracts
    from the text (an answer-anchored phrase, else the last expression: ``\\frac{1}{2}``,
    ``\\sqrt{4}``), as the `math_verify` grader does, so that evaluation and training
    rewards agree; else the last number (integer, decimal, fraction a/b, negative; thousands
    commas removed); else None."""
    for content in reversed(_boxed_contents(text)):
        if content.strip():
            return content.strip()
    extracted = _extracted(text)
    if extracted is not None:
        return extracted
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


_MAX_EXTRACT_CHARS = 8192  # completions longer than this skip math-verify's extraction


def _extracted(text: str) -> str | None:
    """math-verify's own extraction of an answer from free text (its string form), or None."""
    if not text.strip() or len(text) > _MAX_EXTRACT_CHARS:
        return None
    try:
        found = parse(text, parsing_timeout=_timeout())
    except Exception:  # odd LaTeX or a timeout: fall back to the last number
        return None
    strings = [v for v in found if isinstance(v, str) and v.strip()]
    if not any(isinstance(v, Basic) for v in found) or not strings:
        return None
    return strings[-1].strip()


def _boxed_contents(text: str) -> list[str]:
    contents = []
    for match in _BOXED.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            if text[i] == "\\":
                i += 2  # an escaped character, such as \{ in a set
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            contents.append(text[match.end():i - 1])
    return contents


def answers_equivalent(answer: str, reference: str) -> bool:
    """Whether two answer strings are mathematically equivalent (math-verify), with equal
    strings as a fast path. Unparsable, over-long, or too-expensive answers (huge powers or
    factorials) are equivalent only when equal as strings."""
    return _equivalent(answer.strip(), reference.strip())


def is_correct(completion: str, reference: str) -> bool:
    """Whether the final answer of a completion is equivalent to the reference."""
    answer = extract_final_answer(completion)
    return answer is not None and answers_equivalent(answer, reference)


@lru_cache(maxsize=16384)
def _equivalent(answer: str, reference: str) -> bool:
    if answer == reference:
        return True
    gold, target = _parse(reference), _parse(answer)
    if not gold or not target:
        return False
    return bool(verify(list(gold), list(target), timeout_seconds=_timeout()))


@lru_cache(maxsize=16384)
def _parse(text: str) -> tuple[Any, ...]:
    """math-verify's parse of an answer; () when it is unparsable or unsafe to evaluate.

    The answer is read as the content of a ``\\boxed{}`` first: bare, math-verify's
    extraction takes ``2^{10}`` for 2 and misses ``\\sqrt{2}``. Python-style expressions that
    LaTeX cannot read (``3**2``) fall back to the bare parse.
    """
    if not text or len(text) > _MAX_ANSWER_CHARS:
        return ()
    for candidate in (f"\\boxed{{{text}}}", text):
        parsed = tuple(parse(candidate, parsing_timeout=_timeout()))
        if any(isinstance(value, Basic) for value in parsed):
            return parsed if all(_is_cheap(value) for value in parsed) else ()
    return ()


def _is_cheap(value: Any) -> bool:
    """False for expressions whose comparison could run for ever (9**9**9**9, (10**6)!):
    sympy evaluates integer powers and factorials exactly."""
    if not isinstance(value, Basic):
        return True
    for node in preorder_traversal(value):
        if isinstance(node, Pow) and not _is_small(node.exp):
            return False
        if isinstance(node, factorial) and not _is_small(node.args[0]):
            return False
    return True


def _is_small(value: Any) -> bool:
    """Whether an exponent or factorial argument is symbolic or at most _MAX_EXPONENT."""
    if value.is_Number:
        return bool(abs(value) <= _MAX_EXPONENT)
    if not value.is_number:
        return True  # symbolic (x**n): nothing to evaluate
    # An unevaluated numeric expression: only sums and products of numbers are cheap to
    # evaluate; anything else (a power, a function) could itself be a tower.
    if not all(node.is_Number or isinstance(node, Add | Mul) for node in preorder_traversal(value)):
        return False
    return bool(abs(value.evalf()) <= _MAX_EXPONENT)


def _timeout() -> int | None:
    """math-verify's timeout where its SIGALRM is safe: in the main thread (signals cannot
    be set elsewhere) and when nobody else has an alarm handler it would override."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return _TIMEOUT_S if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL else None


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
