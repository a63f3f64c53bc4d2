"""Validation of the typed configs: one error format that names the field and the rule."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def parse_enum(cls: type[E], value: object, where: str) -> E:
    """`value` (a member or its string, e.g. from JSON) as a member of `cls`, or a ValueError
    like "PAECConfig.mask_mode must be one of soft, hard, got 'fuzzy'"."""
    try:
        return cls(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}") from None


def require(ok: bool, where: str, rule: str, value: object) -> None:
    """Raise "<where> <rule>, got <value>" unless `ok`; a NaN never passes."""
    if not ok or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{where} {rule}, got {value!r}")
