"""multi's formula (`calculate_output`): a whitelisted ast, walked (never eval'd). Checked when
the grader is built (see paec.grading.graders), evaluated per sample on the sub-graders' rewards."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from paec.errors import GraderError

MAX_FORMULA_CHARS = 1000
"""Longest `calculate_output` accepted."""
MAX_FORMULA_DEPTH = 50
"""Deepest nesting of a formula (bounds the recursion of checking and evaluating it)."""

_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "min": (min, 2, 64), "max": (max, 2, 64), "abs": (abs, 1, 1), "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 1), "exp": (math.exp, 1, 1), "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
}


@dataclass(frozen=True)
class Formula:
    """`calculate_output`: + - * / (unary + -), parentheses, numbers, sub-grader names and
    the functions min, max, abs, sqrt, log, exp, floor, ceil."""

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str, names: Sequence[str], path: str) -> Formula:
        if len(text) > MAX_FORMULA_CHARS:
            raise GraderError(path, f"longer than {MAX_FORMULA_CHARS} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise GraderError(path, f"cannot parse formula: {exc}") from None
        cls._check(tree, frozenset(names), path, 0)
        return cls(text, tree)

    @classmethod
    def _check(cls, node: ast.expr, names: frozenset[str], path: str, depth: int) -> None:
        if depth > MAX_FORMULA_DEPTH:
            raise GraderError(path, f"nested deeper than {MAX_FORMULA_DEPTH}")
        children: list[ast.expr] = []
        if isinstance(node, ast.Constant):
            if (isinstance(node.value, bool) or not isinstance(node.value, int | float)
                    or not math.isfinite(float(node.value))):
                raise GraderError(path, f"unsupported constant {node.value!r}")
        elif isinstance(node, ast.Name):
            if node.id not in names:
                raise GraderError(path, f"unknown name {node.id!r}; graders: "
                                  + ", ".join(sorted(names)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            children = [node.operand]
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            children = [node.left, node.right]
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else ""
            if fn not in _FUNCTIONS or node.keywords:
                raise GraderError(path, f"function {ast.unparse(node.func)!r} is not allowed; "
                                  "allowed: " + ", ".join(sorted(_FUNCTIONS)))
            _, low, high = _FUNCTIONS[fn]
            if not low <= len(node.args) <= high:
                raise GraderError(path, f"{fn}() takes {low} to {high} arguments")
            children = node.args
        else:
            raise GraderError(path, f"{ast.unparse(node)!r} is not allowed: only numbers, "
                              "grader names, + - * /, parentheses and functions")
        for child in children:
            cls._check(child, names, path, depth + 1)

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value; raises ArithmeticError / ValueError (x/0, log(0), overflow)."""
        return float(self._eval(self.tree, values))

    def _eval(self, node: ast.expr, values: Mapping[str, float]) -> float:
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float)  # by _check
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, values)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, values),
                                          self._eval(node.right, values))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # by _check
        return float(_FUNCTIONS[node.func.id][0](*(self._eval(a, values) for a in node.args)))
