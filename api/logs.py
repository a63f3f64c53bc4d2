"""The API's log output: one line per record on stderr, as JSON (the default) or plain text
(`PAEC_LOG_FORMAT`), for every `paec.*` logger.

- `paec.access`: one record per request, written by api/middleware.py once the response has
  ended, carrying `request_id`, `method`, `path`, `status` and `duration_ms`. It replaces
  uvicorn's access log, which prints the URL-decoded path (a `%0A` in it forged a line).
- `paec.api`: errors; the 500 handler's record carries the request id the client was given
  and the traceback (`exc_info`).

Paths are logged escaped (`escape_path`): control characters, spaces, `%` and anything not
ASCII are percent-encoded, so a logged path is always one line of printable ASCII. In the
JSON format every value is also JSON-escaped; in the plain format a traceback spans lines,
as tracebacks do.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import quote

LogFormat = Literal["json", "plain"]
FIELDS = ("request_id", "method", "path", "status", "duration_ms")
"""Extra record attributes that the formatters write when a record has them."""
_SAFE_PATH = "/:@!$&'()*+,;=-._~"


def escape_path(path: str) -> str:
    """`path` percent-encoded where it is not printable ASCII (and `%` itself)."""
    return quote(path, safe=_SAFE_PATH)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, the request fields it
    carries, and `exception` (the traceback) when it has one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class PlainFormatter(logging.Formatter):
    """`time level logger message key=value...`, the traceback on the following lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={record.__dict__[name]}" for name in FIELDS
                          if name in record.__dict__)
        line = super().formatMessage(record)
        return f"{line} {fields}" if fields else line


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record arrives (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(log_format: LogFormat) -> None:
    """Send the `paec` loggers' records (INFO and up) and uvicorn's to stderr in
    `log_format`, and silence uvicorn's access log (the `paec.access` records replace it).
    Calling it again replaces the handler: one line per record, whichever app was built
    last. (`uvicorn api.app:app` builds the app after configuring its logging, so this
    wins; a server configured afterwards, like the tests' threaded one, resets uvicorn's
    loggers but not `paec`'s.)"""
    logger = logging.getLogger("paec")
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # uvicorn's own messages (start-up, shutdown, errors it catches) in the same format; its
    # access log gives way to paec.access.
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.handlers = [handler]
    uvicorn_error.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
