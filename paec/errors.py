"""The library's errors: one hierarchy, each class naming what the user got wrong.

Every error a user's input can cause (a config, a dataset, a grader, a model name, a grader's
source) is a `PAECError` that carries a stable `code` and the `param` it is about (a field
path relative to what was validated: `paec.top_p` of a TrainConfig, `grader.graders.acc` of a
grader spec, a row's field of a dataset). The service maps each class to its API code and
field with a table (`worker/runner.py`); anything that is not a `PAECError` is a bug of ours
and is reported as an internal error, never as the user's mistake.

The classes also derive from the built-in they refine (ValueError, LookupError), so that
callers that only know the built-ins keep working. Torch-free, standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class PAECError(Exception):
    """An error caused by the user's input; `code` says which kind, `param` which field
    ("" when the input as a whole is wrong)."""

    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, *, param: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(PAECError, ValueError):
    """An invalid training setting; `param` is the field's path in TrainConfig
    (`learning_rate`, `paec.top_p`, `loss.clip_low`), "" for the config as a whole."""

    code = "invalid_hyperparameters"


class AnchorMismatch(ConfigError):
    """A checkpoint's PAEC anchor was built with another K or rho_min than the configuration
    asks for: resuming would silently mix two floors."""


@dataclass(frozen=True)
class RowError:
    """What is wrong with one row: ``field`` is a path such as ``messages[2].role``
    (message indices 0-based), or "" when the row as a whole is wrong."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: {self.field}" if self.field else f"line {self.line}"
        return f"{where}: {self.message}"


class DatasetError(PAECError, ValueError):
    """A dataset that cannot be used; ``errors`` lists the bad rows' errors, the first
    ``max_errors`` of them when scanned from a file (empty when the problem is not about
    rows, such as an unknown built-in task); ``total_errors`` and ``bad_rows`` count them
    all."""

    code = "invalid_training_file"

    def __init__(self, message: str, errors: Sequence[RowError] = (), *,
                 total_errors: int | None = None, bad_rows: int | None = None) -> None:
        super().__init__(message)
        self.errors: list[RowError] = list(errors)
        self.total_errors = len(self.errors) if total_errors is None else total_errors
        self.bad_rows = len({e.line for e in self.errors}) if bad_rows is None else bad_rows

    @classmethod
    def from_rows(cls, errors: Sequence[RowError], *, max_errors: int = 50,
                  total_errors: int | None = None, bad_rows: int | None = None
                  ) -> DatasetError:
        """An error whose message lists the first ``max_errors`` row errors, then a count.
        ``errors`` may be only the first of ``total_errors`` in ``bad_rows`` rows (the
        default: all of them)."""
        total = len(errors) if total_errors is None else total_errors
        rows = len({e.line for e in errors}) if bad_rows is None else bad_rows
        head = f"invalid dataset: {total} error(s) in {rows} row(s)"
        shown = errors[:max_errors]
        lines = [f"  {e}" for e in shown]
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown)} more")
        return cls("\n".join([head, *lines]), shown, total_errors=total, bad_rows=rows)


class GraderError(PAECError, ValueError):
    """An invalid grader spec; the message starts with the field path (`grader.graders.acc`),
    which is also `param` (and `path`)."""

    code = "invalid_grader"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}", param=path)
        self.path = path


class SandboxError(PAECError):
    """A python grader's source cannot be used: it does not compile, its module code fails,
    or it defines no callable `grade(sample, item)`."""

    code = "invalid_grader"


class ModelNotFoundError(PAECError, LookupError):
    """A model name or folder that names nothing we can load."""

    code = "model_not_found"


class EngineError(PAECError, RuntimeError):
    """A rollout engine (`paec.engines`) could not start or stopped answering: its
    interpreter is missing, its process died or timed out. The message names what failed and
    ends with the tail of the engine's log."""

    code = "engine_unavailable"
