"""What the `paec` command reads besides the API: values given on its command line and
local JSON files. Anything it cannot use is a UsageError (exit 1, the message as is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """A command line or local file the CLI cannot use (exit 1, message as is)."""


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, objects), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_json(path: str, what: str) -> dict[str, Any]:
    """A JSON object from a file (UsageError naming the file otherwise)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"the {what} {path} must hold a JSON object")
    return obj


def key_values(pairs: list[str], flag: str) -> dict[str, str]:
    """`key=value` arguments of a repeatable flag as a dict (UsageError naming the flag)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"{flag} takes key=value, got {pair!r}")
        out[key] = value
    return out
