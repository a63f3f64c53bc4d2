"""The dependency graph runs one way: api -> store <- worker -> paec; paec imports nothing of
ours, and the API process never imports torch.

One deliberate edge: the domain (`store`) validates datasets, graders and trainer settings
with paec's own torch-free modules, so that what the API accepts is exactly what the trainer
runs. Those modules are listed here, and a subprocess proves that they pull in no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"api", "worker", "paec", "store", "client", "experiments"}
ALLOWED = {
    "paec": set(),
    "store": {"paec"},
    "api": {"store"},
    "worker": {"store", "paec"},
    # the demo and the HTTP client: they talk to the service over HTTP and start its
    # processes; they use paec only for its torch-free built-in datasets
    "client": {"paec"},
    # the reproduction experiment uses the public trainer only
    "experiments": {"paec"},
}


# The paec modules the domain may import; none of them may import torch (checked below).
TORCH_FREE_PAEC = {"paec.data", "paec.graders", "paec.train_config", "paec.grader_errors",
                   "paec.loss_config", "paec.config", "paec.checks", "paec.formula",
                   "paec.sandbox", "paec.templates"}


def imported_modules(path: Path) -> set[str]:
    """Full names of the modules of ours that a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in OURS}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages of ours that a file imports (absolute imports only: we use no
    relative ones, and a test below keeps it that way)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module:
                found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    bad = {str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package] - {package})
           for f in files}
    assert {f: b for f, b in bad.items() if b} == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import torch\nfrom store.settings import Settings\nimport api.app\n")
    assert imported_packages(bad) == {"store", "api"}


def test_the_domain_uses_only_torch_free_paec_modules() -> None:
    used = {m for f in (ROOT / "store").rglob("*.py") for m in imported_modules(f)
            if m.startswith("paec")}
    assert used <= TORCH_FREE_PAEC, sorted(used - TORCH_FREE_PAEC)


def test_api_import_graph_has_no_torch() -> None:
    code = ("import sys, api.app, api.routes, store.jobs; "
            f"allowed = {sorted(TORCH_FREE_PAEC | {'paec'})!r}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'transformers', 'worker'} "
            "or (m.split('.')[0] == 'paec' and m not in allowed)); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
