"""Validation of the typed configs: one error format that names the field and the rule.

Every failure is a `ConfigError` whose message starts with where it is ("PAECConfig.top_p
must be ...") and whose `param` is the field's path in a TrainConfig ("paec.top_p")."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TypeVar

from paec.errors import ConfigError

E = TypeVar("E", bound=StrEnum)

_SECTIONS = {"TrainConfig": "", "PAECConfig": "paec", "PolicyLossConfig": "loss"}
"""Where each config sits in a TrainConfig: the prefix of its fields' paths."""


def config_error(where: str, message: str) -> ConfigError:
    """A ConfigError "<where> <message>", its param the TrainConfig path of `where`
    ("PolicyLossConfig.clip_low" -> "loss.clip_low"; "TrainConfig" -> "")."""
    section, _, name = where.partition(".")
    prefix = _SECTIONS.get(section, "")
    param = ".".join(part for part in (prefix, name) if part)
    return ConfigError(f"{where} {message}", param=param)


def parse_enum(cls: type[E], value: object, where: str) -> E:
    """`value` (a member or its string, e.g. from JSON) as a member of `cls`, or a ConfigError
    like "PAECConfig.mask_mode must be one of soft, hard, got 'fuzzy'"."""
    try:
        return cls(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise config_error(where, f"must be one of {allowed}, got {value!r}") from None


def require(ok: bool, where: str, rule: str, value: object) -> None:
    """Raise "<where> <rule>, got <value>" unless `ok`; a NaN never passes."""
    if not ok or (isinstance(value, float) and math.isnan(value)):
        shown = repr(value)  # a hostile value (a 4,000-digit int) is not echoed whole
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise config_error(where, f"{rule}, got {shown}")


def require_int(value: object, where: str, low: int, high: int) -> None:
    """Raise unless `value` is an int (not a bool, not a float such as 1e20) in [low, high]:
    "<where> must be an integer in [low, high], got <value>". Every integer a config holds
    has an upper bound, so that nothing reaches a database column or an allocation unbounded
   ."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    require(ok, where, f"must be an integer in [{low}, {high}]", value)


def require_finite(value: object, where: str, rule: str, ok: bool) -> None:
    """Raise unless `value` is a finite real number (not a bool) and `ok`: "<where> must be
    a finite number <rule>, got <value>" (rule: "in (0, 1]", "> 0", ...)."""
    require(is_finite_number(value) and ok, where, f"must be a finite number {rule}", value)


def is_finite_number(value: object) -> bool:
    """Whether `value` is an int or float (not a bool) that is a finite float: an int past
    the float range (10**400) is not, and does not raise OverflowError here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
