"""What the `paec` command prints: table cells, tables, `key  value` records, the --json
switch, and the progress bar on stderr (redrawn in place only when stderr is a terminal)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def when(ts: int | None) -> str:
    """A unix time as UTC `YYYY-MM-DD HH:MM:SS`."""
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def size(n: float) -> str:
    """Bytes in binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [list(headers), *([fmt(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def record(pairs: Sequence[tuple[str, Any]]) -> str:
    """`key  value` lines."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in pairs)


def emit(args: argparse.Namespace, obj: Any, text: Callable[[], str]) -> None:
    """The object as JSON with --json, else the readable text."""
    print(json.dumps(obj, indent=2) if args.json else text())


class ProgressBar:
    """A one-line bar on `stream` (stderr), redrawn in place on a terminal; elsewhere
    plain lines (every update for steps, every 10% for bytes)."""

    def __init__(self, total: int, *, unit: str = "steps", stream: TextIO | None = None,
                 width: int = 28) -> None:
        self.total, self.unit, self.width = total, unit, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.line, self.last_tenth = "", -1

    def _count(self, n: int) -> str:
        return size(n) if self.unit == "bytes" else str(n)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Show `done` of `total` (the last total when None) and a note after the bar."""
        self.total = total or self.total
        frac = min(done / self.total, 1.0) if self.total else 0.0
        filled = int(self.width * frac)
        self.line = (f"[{'#' * filled}{'.' * (self.width - filled)}] "
                     f"{self._count(done)}/{self._count(self.total)} {note}").rstrip()
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line)
        elif self.unit != "bytes" or int(frac * 10) > self.last_tenth:
            self.last_tenth = int(frac * 10)
            self.stream.write(self.line + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print a line to stdout without breaking the bar."""
        if self.tty and self.line:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(text, flush=True)
        if self.tty and self.line:
            self.stream.write(self.line)
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
