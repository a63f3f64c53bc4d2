"""Public ids in OpenAI's style: a prefix and 24 random lowercase letters and digits."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits

FILE = "file-"
JOB = "ftjob-"
EVENT = "ftevent-"
CHECKPOINT = "ftckpt_"
CHECKPOINT_PERMISSION = "cp_"
EVALUATION = "eval-"
TENANT = "org-"
API_KEY = "key_"


def new_id(prefix: str) -> str:
    """A fresh random id with `prefix` (~124 bits of randomness)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def event_id(seq: int) -> str:
    """The public id of the event with primary key `seq`."""
    return f"{EVENT}{seq}"


def event_seq(public_id: str) -> int | None:
    """The `seq` of an event id, or None when `public_id` is not one."""
    digits = public_id.removeprefix(EVENT)
    if digits == public_id or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)
