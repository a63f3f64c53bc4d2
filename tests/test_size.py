"""Sizes a reader can hold in mind: no file of ours over 500 lines, no function over 60.

Generated migrations are exempt, and so are the numeric kernels listed in `KERNELS`, each of
which says in its docstring why it stays one function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "store", "worker", "paec", "client", "experiments", "bench", "scripts",
            "tests")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
KERNELS = {
    # one pass over reused (r, V) buffers; its pieces would pass a dozen tensors around
    "paec/calibration/features.py::_histogram_nucleus",
}


def python_files() -> list[Path]:
    return sorted(f for p in PACKAGES for f in (ROOT / p).rglob("*.py"))


def long_functions(path: Path, limit: int, root: Path = ROOT) -> list[str]:
    """`path::name (lines)` of every function or method in `path` longer than `limit`."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{rel}::{node.name} ({node.end_lineno - node.lineno + 1})"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > limit]


def test_no_file_is_longer_than_500_lines() -> None:
    long = {f.relative_to(ROOT).as_posix(): n for f in python_files()
            if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_is_longer_than_60_lines() -> None:
    found = [entry for f in python_files() for entry in long_functions(f, MAX_FUNCTION_LINES)]
    assert [e for e in found if e.split(" (")[0] not in KERNELS] == []


def test_every_exempt_kernel_exists_and_says_why() -> None:
    for entry in KERNELS:
        rel, name = entry.split("::")
        tree = ast.parse((ROOT / rel).read_text())
        node = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == name)
        assert "one function" in (ast.get_docstring(node) or ""), entry


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("def f():\n" + "    x = 1\n" * 70 + "\n\ndef g():\n"
                                   "    return 1\n")
    assert long_functions(tmp_path / "x.py", 60, root=tmp_path) == ["x.py::f (71)"]
