"""Does requirements.lock still match pyproject.toml?

Two checks, both run by `make lock-check` (and so by .ci/run):

    python scripts/lockcheck.py --lock requirements.lock --pyproject pyproject.toml
        offline: every requirement that pyproject.toml names (the base list, every extra, the
        build system) is pinned in the lock, at a version its specifier allows.
    python scripts/lockcheck.py --lock requirements.lock --compare fresh.lock
        the lock against a fresh pip-compile of pyproject.toml seeded with it (the Makefile
        makes `fresh.lock`): any pin added, dropped or moved means the lock is stale, which
        also catches a new dependency's own dependencies.

Either failure exits 1 and says to run `make lock`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

FIX = "run `make lock` and commit requirements.lock with pyproject.toml"

# `name==version` at the start of a line, with an optional environment marker after `;`.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class Problem:
    """One way the lock and pyproject.toml disagree, in words a developer can act on."""

    package: str
    what: str

    def __str__(self) -> str:
        return f"{self.package}: {self.what}"


def read_pins(text: str) -> dict[str, Version]:
    """The lock's `name==version` lines, by canonical name (comments and options skipped)."""
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def declared_requirements(pyproject: dict[str, object]) -> list[tuple[Requirement, str]]:
    """Every requirement pyproject.toml declares, with where it is declared."""
    project = pyproject.get("project", {})
    build = pyproject.get("build-system", {})
    assert isinstance(project, dict) and isinstance(build, dict)
    found: list[tuple[Requirement, str]] = []
    for text in project.get("dependencies", []):
        found.append((Requirement(text), "dependencies"))
    for extra, texts in project.get("optional-dependencies", {}).items():
        found.extend((Requirement(text), f"optional-dependencies.{extra}") for text in texts)
    for text in build.get("requires", []):
        found.append((Requirement(text), "build-system.requires"))
    return found


def check_declared(pyproject: dict[str, object], pins: dict[str, Version]) -> list[Problem]:
    """Requirements of pyproject.toml that the lock lacks or pins outside their range.

    A requirement whose marker excludes this interpreter and platform (the lock is compiled
    for them) is not expected in the lock.
    """
    problems: list[Problem] = []
    for req, where in declared_requirements(pyproject):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(Problem(req.name, f"declared in {where} ({req}) but not in the lock"))
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(Problem(
                req.name, f"the lock pins {pins[name]}, outside {where}'s '{req.specifier}'"))
    return problems


def compare(locked: dict[str, Version], fresh: dict[str, Version]) -> list[Problem]:
    """Pins that a fresh resolution adds, drops or moves."""
    problems: list[Problem] = []
    for name in sorted(fresh.keys() - locked.keys()):
        problems.append(Problem(name, f"needed ({fresh[name]}) but not in the lock"))
    for name in sorted(locked.keys() - fresh.keys()):
        problems.append(Problem(name, f"in the lock ({locked[name]}) but no longer needed"))
    for name in sorted(locked.keys() & fresh.keys()):
        if locked[name] != fresh[name]:
            problems.append(Problem(name, f"locked at {locked[name]}, resolves to {fresh[name]}"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--pyproject", type=Path, help="check the declared requirements")
    parser.add_argument("--compare", type=Path, help="a fresh pip-compile to compare against")
    args = parser.parse_args(argv)
    if args.pyproject is None and args.compare is None:
        parser.error("give --pyproject, --compare or both")

    pins = read_pins(args.lock.read_text())
    problems: list[Problem] = []
    if args.pyproject is not None:
        problems += check_declared(tomllib.loads(args.pyproject.read_text()), pins)
    if args.compare is not None:
        problems += compare(pins, read_pins(args.compare.read_text()))
    if problems:
        print(f"{args.lock} is stale:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print(FIX, file=sys.stderr)
        return 1
    print(f"{args.lock}: {len(pins)} pins match pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
