"""Hostile-input checks at the edge, before routing or any parser sees a request: path
segments, query names and values, JSON bodies and multipart form fields holding a NUL or a
lone surrogate, and JSON nested deeper than MAX_JSON_DEPTH.

Postgres refuses NUL in text and json (`\\u0000`), and a lone surrogate cannot be encoded to
UTF-8 at all, so either one used to reach the driver and answer a 500. Checking once here
covers every route, present and future. Each check returns an `EdgeProblem` (a 400 in the
error envelope whose `param` names the field) or None; api/middleware.py answers it.

Only the error path pays for the route lookup that names a path parameter; a clean request
costs one regular-expression search per path and query string (and a parse plus a walk of
its JSON body, for POST, PUT and PATCH).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Scope

from api.routes import ROUTERS
from store.db import unstorable

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON body may have (the body itself is level 1)."""



@dataclass(frozen=True)
class EdgeProblem:
    """Why a request is refused before it reaches a route: a 400 naming `param`."""

    message: str
    param: str | None
    code: str = "invalid_request"


def _path_param(scope: Scope) -> str:
    # The routes' own parameter names, looked up only once a path has been refused (the
    # routers are mounted without a prefix of their own: api/app.py).
    for route in (route for router in ROUTERS for route in router.routes):
        regex = getattr(route, "path_regex", None)
        match = regex.match(scope["path"]) if regex is not None else None
        if match is not None:
            for name, value in match.groupdict().items():
                if isinstance(value, str) and unstorable(value):
                    return str(name)
    return "path"


def check_path(scope: Scope) -> EdgeProblem | None:
    """A NUL (`%00`) in the decoded path, named by the route's path parameter."""
    what = unstorable(scope["path"])
    if what is None:
        return None
    param = _path_param(scope)
    return EdgeProblem(f"the path parameter {param!r} must not contain {what}", param)


def check_query(query_string: bytes) -> EdgeProblem | None:
    """A NUL in a query parameter's name or value (named by the parameter)."""
    if not query_string:
        return None
    text = query_string.decode("latin-1")
    if "%00" not in text and "\x00" not in text:
        return None  # the fast path: only %00 decodes to a NUL (surrogates decode to U+FFFD)
    for name, value in parse_qsl(text, keep_blank_values=True):
        for part in (name, value):
            what = unstorable(part)
            if what is not None:
                param = name if unstorable(name) is None else "query"
                return EdgeProblem(f"the query parameter {param!r} must not contain {what}",
                                   param)
    return None


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body with this Content-Type as JSON (no type counts)."""
    if not content_type:
        return True
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/")
                                           and main.endswith("+json"))


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(value: Any) -> EdgeProblem | None:
    # Iterative, so that the depth limit, not Python's stack, bounds the work.
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            what = unstorable(item)
            if what is not None:
                return EdgeProblem(f"{path or 'the body'} must not contain {what}",
                                   path or None)
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return EdgeProblem(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} "
                                   f"levels (at {path})", path or None)
            if isinstance(item, dict):
                for key, child in item.items():
                    child_path = _join(path, key)
                    what = unstorable(key)
                    if what is not None:  # named by its object: the key is unprintable
                        return EdgeProblem(f"a key of {path or 'the body'} must not contain "
                                           f"{what}", path or None)
                    stack.append((child, child_path, depth + 1))
            else:
                stack.extend((child, _join(path, i), depth + 1) for i, child in enumerate(item))
    return None


def check_json_body(body: bytes) -> EdgeProblem | None:
    """A malformed, too deeply nested, or unstorable JSON body (an empty one is fine: the
    route decides whether it needs one)."""
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except RecursionError:  # deeper than the C parser's own limit
        return EdgeProblem(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels",
                           None)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8 bytes
        return EdgeProblem(f"malformed JSON body: {exc}", None)
    return _walk(value)


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a multipart/form-data body, None for anything else."""
    if not content_type:
        return None
    main, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    return boundary if main == b"multipart/form-data" and boundary else None


class FormScanner:
    """Checks a multipart/form-data body as it streams past, without keeping it: a NUL in a
    field's name or value or in a file's name is refused (Starlette decodes what is not
    UTF-8 as latin-1, so NUL is the one character that reaches the database). File contents
    are the service's to validate (store/files.py) and are not looked at."""

    MAX_FIELD_BYTES = 64 * 1024
    """Bytes of a field's value that are checked (the routes' fields are short)."""

    def __init__(self, boundary: bytes) -> None:
        self.problem: EdgeProblem | None = None
        self._malformed = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin, "on_header_field": self._field,
            "on_header_value": self._header, "on_header_end": self._header_end,
            "on_part_data": self._data, "on_part_end": self._part_end})

    def feed(self, chunk: bytes) -> EdgeProblem | None:
        """Scan the next chunk of the body; the first problem found, if any."""
        if self.problem is None and not self._malformed and chunk:
            try:
                self._parser.write(chunk)
            except Exception:  # a malformed body is the route's form parser's to report
                self._malformed = True
        return self.problem

    def _refuse(self, message: str, param: str) -> None:
        if self.problem is None:
            self.problem = EdgeProblem(message, param)

    def _part_begin(self) -> None:
        self._name, self._is_file = "", False
        self._value.clear()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            name = options.get(b"name", b"")
            self._name = name.decode("utf-8", "replace").replace("\x00", "")
            if b"\x00" in name:
                self._refuse("a form field's name must not contain a NUL character",
                             self._name or "form")
            filename = options.get(b"filename")
            if filename is not None:
                self._is_file = True
                if b"\x00" in filename:
                    self._refuse("the file's name must not contain a NUL character",
                                 self._name or "file")
        self._header_field.clear()
        self._header_value.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._is_file and len(self._value) < self.MAX_FIELD_BYTES:
            self._value += data[start:end]

    def _part_end(self) -> None:
        if not self._is_file and b"\x00" in self._value:
            self._refuse(f"the form field {self._name!r} must not contain a NUL character",
                         self._name or "form")
