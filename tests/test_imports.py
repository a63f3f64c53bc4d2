"""Every module of every package imports cleanly and runs nothing on import, as documentation
builders, test discovery and `pkgutil.walk_packages` expect (a `__main__` module without its
guard used to exit the importing process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Walks one package in a fresh interpreter, imports each module, and prints the names; an
# import that exits or raises stops the walk before the final line.
WALK = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [sys.argv[1]]
for info in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".", onerror=sys.exit):
    importlib.import_module(info.name)
    names.append(info.name)
print("\\n".join(names))
print("walked", len(names))
"""


@pytest.mark.parametrize("package", ["paec", "store", "api", "worker", "client", "experiments"])
def test_every_module_imports_without_running(package: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", WALK, package], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                       "PAEC_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    on_disk = {p.stem for p in (ROOT / package).glob("*.py")} - {"__init__"}
    walked = {name.rsplit(".", 1)[-1] for name in lines[:-1]}
    assert on_disk <= walked, f"not imported: {sorted(on_disk - walked)}"
    assert lines[-1] == f"walked {len(lines) - 1}"
    if package == "paec":
        assert "paec.__main__" in lines
