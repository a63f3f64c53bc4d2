"""Grader templates: the `input` and `reference` strings of a grader, parsed when the grader is
built and rendered per sample (see paec.grading.graders).

Templates: `{{ sample.output_text }}`, `{{ sample.output_json.key }}` (the sample parsed as
JSON), `{{ item.key }}` and nested `{{ item.a.b }}` (list elements by index, `item.a.0`).
Namespaces and sample fields are checked when the grader is built; a missing item key is an
`invalid_variable_error` when grading. Non-string values render as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paec.errors import GraderError

_TAG = re.compile(r"\{\{\s*(.*?)\s*\}\}")
SAMPLE_FIELDS = ("output_text", "output_json")
"""The `sample.*` template variables (and the keys of the python grader's `sample` dict)."""


class VariableError(Exception):
    def __init__(self, flag: str, detail: str) -> None:
        super().__init__(detail)
        self.flag = flag


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and `(namespace, key, ...)` variable paths, alternating."""

    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def parse(cls, text: str, path: str) -> Template:
        parts: list[str | tuple[str, ...]] = []
        pos = 0
        for tag in _TAG.finditer(text):
            parts.append(text[pos:tag.start()])
            var = tuple(tag.group(1).split("."))
            if len(var) < 2 or var[0] not in ("item", "sample") or not all(var):
                raise GraderError(path, f"template variable {{{{ {tag.group(1)} }}}} must be "
                                  "item.<key> or sample.<field>")
            if var[0] == "sample" and var[1] not in SAMPLE_FIELDS:
                raise GraderError(path, f"unknown sample variable {var[1]!r}; known: "
                                  + ", ".join(SAMPLE_FIELDS))
            parts.append(var)
            pos = tag.end()
        parts.append(text[pos:])
        return cls(tuple(p for p in parts if p != ""))

    def render(self, sample_text: str, item: Mapping[str, Any]) -> str:
        """The text with variables filled in; raises VariableError."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(part, sample_text, item)
            # default=str: an item value JSON cannot hold (a date) renders as its str().
            out.append(value if isinstance(value, str)
                       else json.dumps(value, ensure_ascii=False, default=str))
        return "".join(out)


def _sample_json(sample_text: str) -> Any:
    try:
        return json.loads(sample_text)
    except ValueError as exc:
        raise VariableError("sample_parse_error", f"sample is not JSON: {exc}") from exc


def _lookup(var: tuple[str, ...], sample_text: str, item: Mapping[str, Any]) -> Any:
    if var[0] == "sample":
        value: Any = sample_text if var[1] == "output_text" else _sample_json(sample_text)
        start = 2
    else:
        value, start = item, 1
    for i in range(start, len(var)):
        key = var[i]
        try:
            if isinstance(value, Mapping):
                value = value[key]
            elif isinstance(value, list) and key.lstrip("-").isdigit():
                value = value[int(key)]
            else:
                raise LookupError
        except LookupError:
            raise VariableError("invalid_variable_error", f"{{{{ {'.'.join(var)} }}}}: "
                                 f"{'.'.join(var[:i])} has no {key!r}") from None
    return value
