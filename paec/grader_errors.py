"""GraderError, the one error of an invalid grader spec, raised by paec.graders, paec.templates
and paec.formula (its own module so that none of them imports another for it)."""

from __future__ import annotations


class GraderError(ValueError):
    """An invalid grader spec; the message starts with the field path (`grader.graders.acc`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
