"""The dependency graph runs one way: api -> store <- worker -> paec; paec imports nothing of
ours, and the API process never imports torch.

One deliberate edge: the domain (`store`) validates datasets, graders and trainer settings
with paec's own torch-free packages (config, grading, data, errors), so that what the API
accepts is exactly what the trainer runs; a subprocess proves that they pull in no torch.

Inside paec the packages are layers (`PAEC_RULES`); no module imports a private name of
another, and no import cycle ties two modules together."""

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


# Inside paec, packages are layers. A module whose name starts with a key may import, of
# paec, only modules whose names start with one of its prefixes (itself always). Modules not
# listed (paec.training, paec.cli, paec itself) may import any of paec.
PAEC_RULES: dict[str, tuple[str, ...]] = {
    "paec.errors": (),
    "paec.config": ("paec.config", "paec.errors"),
    "paec.grading": ("paec.grading", "paec.errors"),
    "paec.data": ("paec.errors",),
    "paec.formats": ("paec.config", "paec.data", "paec.errors", "paec.grading"),
    "paec.calibration": ("paec.calibration", "paec.config", "paec.errors"),
    "paec.modeling": ("paec.modeling", "paec.errors"),
    "paec.engines": ("paec.engines", "paec.errors"),
    "paec.training": ("paec.training", "paec.calibration", "paec.config", "paec.data",
                      "paec.engines", "paec.errors", "paec.formats", "paec.grading",
                      "paec.modeling"),
}
# The paec the domain (`store`) may import; none of it may import torch (checked below).
TORCH_FREE_PAEC = ("paec.config", "paec.grading", "paec.data", "paec.errors", "paec.formats")


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `module` is one of `prefixes` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def paec_files() -> list[Path]:
    return sorted((ROOT / "paec").rglob("*.py"))


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


def test_paec_packages_import_only_their_layers() -> None:
    bad = {}
    for f in paec_files():
        name = module_name(f)
        rule = next((prefixes for key, prefixes in PAEC_RULES.items() if under(name, (key,))),
                    None)
        if rule is None:
            continue
        own = name.split(".")[:2]
        allowed = (*rule, ".".join(own))
        wrong = sorted(m for m in imported_modules(f) if m.startswith("paec")
                       and not under(m, allowed))
        if wrong:
            bad[name] = wrong
    assert bad == {}


def test_the_layer_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from paec.training.trainer import Trainer\nimport paec.config.training\n")
    assert imported_modules(bad) == {"paec.training.trainer", "paec.config.training"}
    assert not under("paec.training.trainer", PAEC_RULES["paec.calibration"])
    assert under("paec.config.training", PAEC_RULES["paec.calibration"])
    assert not under("paec.configx", ("paec.config",))


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = []
    for package in sorted(ALLOWED):
        for f in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
                if (isinstance(node, ast.ImportFrom) and node.module
                        and node.module.split(".")[0] in OURS):
                    bad += [f"{f.relative_to(ROOT)}: {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_")]
    assert bad == []


def test_our_modules_import_no_cycle() -> None:
    """Every import counts, at module level or inside a function: a cycle ties two modules
    into one, whichever import runs first."""
    names = {module_name(f): f for p in ALLOWED for f in (ROOT / p).rglob("*.py")}
    graph = {name: {m for m in imported_modules(f) if m in names and m != name}
             for name, f in names.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_domain_uses_only_torch_free_paec_modules() -> None:
    used = {m for f in (ROOT / "store").rglob("*.py") for m in imported_modules(f)
            if m.startswith("paec")}
    assert {m for m in used if not under(m, TORCH_FREE_PAEC)} == set()


def test_torch_free_paec_imports_no_torch() -> None:
    modules = sorted(module_name(f) for f in paec_files() if under(module_name(f),
                                                                   TORCH_FREE_PAEC))
    assert "paec.grading.graders" in modules and "paec.config.training" in modules
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'transformers', 'numpy'}); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_api_import_graph_has_no_torch() -> None:
    code = ("import sys, api.app, api.routes, store.jobs; "
            f"free = {TORCH_FREE_PAEC!r}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'transformers', 'worker'} "
            "or (m.split('.')[0] == 'paec' and m != 'paec' "
            "and not any(m == p or m.startswith(p + '.') for p in free))); "
            "print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
