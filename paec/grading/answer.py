"""The answer checker: a completion's final answer, and whether two answers are equivalent.

One rule set serves the `math_verify` grader (training rewards, in-process or in the sandbox
child) and evaluation (avg@k, pass@k, maj@k grouping), so that a completion counted right in
evaluation is one the grader pays 1 for.

Extraction (`extract_final_answer`), the first rule that gives an answer:
  1. the content of the last complete, non-empty ``\\boxed{...}`` or ``\\fbox{...}``
     (`last_boxed`): braces balanced, a backslash escapes the next character, so a set's
     ``\\{`` and ``\\}`` neither open nor close; matched in one pass, linear even for a
     sample full of unclosed boxes; an empty box is skipped, an unclosed one ignored;
  2. what math-verify extracts from the last _MAX_EXTRACT_CHARS characters of the text (an
     answer-anchored phrase such as "the answer is 3", else the last expression:
     ``\\frac{1}{2}``, ``\\sqrt{4}``), in its string form, when it reads as mathematics;
  3. the last number: integer, decimal or fraction a/b, negative unless the minus is glued
     to a word or number ("5-3" ends in 3), thousands commas removed;
  4. none (the grader's `no_answer`).

Equivalence (`answers_equivalent`): each side, stripped, is read through rule 1 when it holds
a box (so a worked solution ending in ``\\boxed{42}`` serves as a reference). Equal strings are
equivalent. An answer that is integer arithmetic left undone (``23 - 12``, ``3 \\times 4``:
integers joined by +, -, *) is equivalent to nothing else: it restates the problem, and
math-verify would evaluate it and pay a completion that never computed. Otherwise
math-verify parses each side as ``\\boxed{side}`` first (bare,
``2^{10}`` would read as 2 and ``\\sqrt{2}`` be missed), then bare (``3**2``), and `verify`
decides. A side longer than _MAX_ANSWER_CHARS, holding a power or factorial above
_MAX_EXPONENT (sympy would evaluate ``9**9**9**9`` for ever), or that does not parse, is
equivalent only to the same string.

Timeouts: math-verify's own use SIGALRM, which only a main thread may set. Evaluation uses
them where that is safe (`_timeout`) and reads a timeout as "math-verify found nothing"; the
grader passes its own `timeout_s` (None in the sandbox child, whose per-sample alarm bounds
it) and reports a timeout as such.

Standard library only at module level (math-verify and sympy load inside the functions): the
sandbox child, which cannot import paec, loads this file by its path (paec.grading.child).
"""

from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

_TIMEOUT_S = 5
"""math-verify's own parse and verify timeouts, used where SIGALRM may be used."""
_MAX_ANSWER_CHARS = 200
"""Longer answers are compared as exact strings only: a final answer is short, and sympy's
cost grows with the expression."""
_MAX_EXPONENT = 10_000
"""Answers with a larger numeric exponent (or factorial argument) are compared as exact
strings only: sympy would try to evaluate 9**9**9**9 and never return."""
_MAX_EXTRACT_CHARS = 8192
"""math-verify extracts an unboxed answer from this many final characters of a completion:
the answer is at the end, and its cost grows with the text."""

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_INTEGER = r"\(?\s*-?\d+\s*\)?"
_UNEVALUATED = re.compile(
    rf"\s*{_INTEGER}(?:\s*(?:[-+*×]|\\times|\\cdot)\s*{_INTEGER})+\s*")
"""Integers joined by +, -, * (or \\times, \\cdot): arithmetic left undone, such as a
completion restating its problem ("23 - 12 equals"), which math-verify would evaluate and
find equal to the answer. Such an answer matches only the identical reference string."""
# An optional minus not glued to a preceding word or number ("5-3" ends in 3, not -3);
# digits with optional thousands commas; an optional decimal part or /denominator.
_NUMBER = re.compile(r"(?<![\w.])(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+|/\d+)?")


class Problem(StrEnum):
    """Why the math_verify grader gave a sample no score (the values are those of
    paec.grading.child.SampleError)."""

    NO_ANSWER = "no_answer"
    """No rule found an answer in the sample."""
    BAD_REFERENCE = "bad_reference"
    """math-verify could not parse the reference."""
    TIMEOUT = "timeout"
    """math-verify's own timeout (`timeout_s`) ran out."""


@dataclass(frozen=True)
class Verdict:
    """The math_verify grader's result for one sample: a score, or a problem (score 0.0)."""

    score: float
    problem: Problem | None = None
    detail: str | None = None


# ---------------------------------------------------------------------------------------------
# Extraction


def last_boxed(text: str) -> str | None:
    """The stripped content of the last complete, non-empty ``\\boxed{}`` or ``\\fbox{}``
    (rule 1 of the module docstring), or None."""
    openers = {m.end() - 1 for m in _BOX.finditer(text)}  # positions of their "{"
    if not openers:
        return None
    best: tuple[int, int] | None = None  # (start, end) of the content of the last good box
    stack: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character, such as \{ in a set
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            start = stack.pop()
            if (start in openers and (best is None or start > best[0])
                    and text[start + 1:i].strip()):
                best = (start, i)
        i += 1
    return None if best is None else text[best[0] + 1:best[1]].strip()


def last_number(text: str) -> str | None:
    """The last number in `text` (rule 3 of the module docstring), commas removed, or None."""
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion by the rules of the module docstring, or None.

    A math-verify timeout (main thread only) skips rule 2."""
    return _extract(text, _timeout(), lenient=True)


def _extract(text: str, timeout_s: int | None, *, lenient: bool) -> str | None:
    """The extraction rules; a math-verify timeout raises unless `lenient`."""
    from math_verify.errors import TimeoutException  # type: ignore[import-untyped]

    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    try:
        extracted = _extracted(text[-_MAX_EXTRACT_CHARS:], timeout_s)
    except TimeoutException:
        if not lenient:
            raise
        extracted = None
    return extracted if extracted is not None else last_number(text)


def _extracted(text: str, timeout_s: int | None) -> str | None:
    """math-verify's own extraction of an answer from free text (its string form), or None."""
    from math_verify import parse  # type: ignore[import-untyped]  # no py.typed
    from sympy import Basic  # type: ignore[import-untyped]

    if not text.strip():
        return None
    try:
        found = parse(text, parsing_timeout=timeout_s, raise_on_error=True)
    except Exception:  # odd LaTeX: nothing found (a timeout is a BaseException)
        return None
    strings = [v for v in found if isinstance(v, str) and v.strip()]
    if not any(isinstance(v, Basic) for v in found) or not strings:
        return None
    return str(strings[-1]).strip()


# ---------------------------------------------------------------------------------------------
# Equivalence


def answers_equivalent(answer: str, reference: str) -> bool:
    """Whether two answers are equivalent by the rules of the module docstring; a math-verify
    timeout (main thread only) counts as not equivalent."""
    from math_verify.errors import TimeoutException

    try:
        return _equivalent(_read(answer), _read(reference), _timeout())
    except TimeoutException:
        return False


def is_parsable(answer: str) -> bool:
    """Whether math-verify reads the answer as mathematics it may compare (not over-long, no
    runaway power or factorial); others are equivalent only to the same string."""
    from math_verify.errors import TimeoutException

    try:
        return bool(_parse(_read(answer), _timeout()))
    except TimeoutException:
        return False


def is_correct(completion: str, reference: str) -> bool:
    """Whether the final answer of a completion is equivalent to the reference."""
    answer = extract_final_answer(completion)
    return answer is not None and answers_equivalent(answer, reference)


def math_verify_score(text: str, reference: str, *, timeout_s: int | None) -> Verdict:
    """The math_verify grader: 1.0 if the sample's final answer is equivalent to `reference`,
    else 0.0; a problem when the reference does not parse (and is not the answer's very
    string), the sample holds no answer, or math-verify's own timeout ran out.

    `timeout_s` is that SIGALRM timeout, usable only in a main thread; None disables it (the
    caller bounds the time)."""
    from math_verify.errors import TimeoutException

    try:
        gold = _read(reference)
        answer = _extract(text, timeout_s, lenient=False)
        if answer is not None and _equivalent(_read(answer), gold, timeout_s):
            return Verdict(1.0)
        if not _parse(gold, timeout_s):
            return Verdict(0.0, Problem.BAD_REFERENCE,
                           f"reference {reference[:200]!r} could not be parsed")
        if answer is None:
            return Verdict(0.0, Problem.NO_ANSWER, "no answer found in the sample")
        return Verdict(0.0)
    except TimeoutException:  # a BaseException: math-verify's own alarm (timeout_s set)
        return Verdict(0.0, Problem.TIMEOUT, f"math-verify exceeded {timeout_s}s")


def _read(side: str) -> str:
    """One side of a comparison: its last box's content if it holds one, else itself."""
    boxed = last_boxed(side)
    return boxed if boxed is not None else side.strip()


@lru_cache(maxsize=16384)
def _equivalent(answer: str, reference: str, timeout_s: int | None) -> bool:
    from math_verify import verify

    if answer == reference:
        return True
    if _UNEVALUATED.fullmatch(answer):  # "23 - 12" restates the problem; it answers nothing
        return False
    gold, target = _parse(reference, timeout_s), _parse(answer, timeout_s)
    if not gold or not target:
        return False
    try:
        return bool(verify(list(gold), list(target), timeout_seconds=timeout_s,
                           raise_on_error=True))
    except Exception:  # comparing unlike objects (a set with a matrix ...): not equal
        return False


@lru_cache(maxsize=16384)
def _parse(text: str, timeout_s: int | None) -> tuple[Any, ...]:
    """math-verify's parse of an answer, ``\\boxed{text}`` first, then bare; () when it is
    unparsable, over-long or unsafe to evaluate. A timeout raises."""
    from math_verify import parse
    from sympy import Basic

    if not text or len(text) > _MAX_ANSWER_CHARS:
        return ()
    for candidate in (f"\\boxed{{{text}}}", text):
        try:
            parsed = tuple(parse(candidate, parsing_timeout=timeout_s, raise_on_error=True))
        except Exception:  # a parser failure on odd LaTeX means "nothing found"
            continue
        if any(isinstance(value, Basic) for value in parsed):
            return parsed if all(_is_cheap(value) for value in parsed) else ()
    return ()


def _is_cheap(value: Any) -> bool:
    """False for expressions whose comparison could run for ever (9**9**9**9, (10**6)!):
    sympy evaluates integer powers and factorials exactly."""
    from sympy import Basic, Pow, preorder_traversal
    from sympy.functions.combinatorial.factorials import factorial  # type: ignore[import-untyped]

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
    from sympy import Add, Mul, preorder_traversal

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
    be set elsewhere) and when nobody else has an alarm handler it would override (the
    sandbox child's per-sample alarm, for one)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return _TIMEOUT_S if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL else None
