"""Prompt datasets: JSONL loading and validation, built-in offline tasks, a resumable cursor.

Two JSONL forms are accepted, one JSON object per line:

- the OpenAI reinforcement fine-tuning format ``{"messages": [{"role", "content"}, ...],
  <any other keys>}``: ``messages`` and ``tools`` are reserved, every other key reaches the
  graders as ``{{item.key}}``; content is text only and the last message is the user's;
- a plain ``{"prompt": str, "answer": str | number, <any other keys>}`` form, turned into
  one user message.

Every row is validated before anything is returned: a bad file raises one `DatasetError`
listing each bad row's line and field, so a user fixes the whole file in one round.
A `RowConverter` (the public datasets' layouts of `paec.formats`) may turn each parsed row
into one of these forms first; the result is then validated as any row.
The built-in tasks (`BUILTIN_TASKS`) are generated offline and seeded, so the service runs
without any user data or network.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from paec.errors import DatasetError, RowError

ROLES = ("system", "developer", "user", "assistant")
"""Message roles accepted in prompts (those of the OpenAI chat format)."""

_BOM = "\ufeff"

MAX_ROW_DEPTH = 32
"""Levels of arrays and objects a row may nest (the row itself is level 1). A row 5,000
levels deep crashed the upload with a RecursionError; graders and the sandbox
recurse over items too."""
_TOO_DEEP = f"nests arrays and objects deeper than {MAX_ROW_DEPTH} levels"
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE = ("holds a lone surrogate (a \\ud800-\\udfff escape that is not half of a "
                   "pair), which is not text")

RowConverter = Callable[[dict[str, Any], int], dict[str, Any] | list[RowError]]
"""Turns a parsed row (a JSON object) of another layout, at a line, into a row of this
module's forms, or returns the errors naming the line and the source's field
(`paec.formats.row_converter`)."""


@dataclass(frozen=True)
class Example:
    """One prompt of a dataset."""

    messages: list[dict[str, str]]
    """The prompt conversation as ``{"role", "content"}`` dicts; the last one is the user's."""
    item: dict[str, Any]
    """The whole row as parsed: graders read any key as ``{{item.key}}``. For the plain form
    it holds ``prompt`` and ``answer`` (and any other keys of the row)."""
    index: int
    """Row number: the 1-based line number in the file (blank lines count)."""

    @property
    def answer(self) -> str | None:
        """The row's ``answer`` as a string (numbers as JSON wrote them), or None if absent."""
        value = self.item.get("answer")
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# JSONL loading and validation


def load_jsonl(source: str | os.PathLike[str] | Iterable[str | bytes], *,
               max_errors: int = 50, convert: RowConverter | None = None) -> list[Example]:
    """Load and validate a JSONL dataset from a path (str or PathLike) or from its lines.

    Blank lines are skipped but still counted, so ``Example.index`` and error lines are the
    file's line numbers. Raises `DatasetError` listing every bad row (the message shows the
    first ``max_errors``); nothing is returned unless every row is valid. ``convert``, if
    given, turns each parsed row into one of the module's forms before it is validated.
    """
    if isinstance(source, str | os.PathLike):
        # Binary, so that a line that is not UTF-8 is one row error and not a crash.
        with open(source, "rb") as f:
            return _load_lines(f, max_errors=max_errors, convert=convert)
    return _load_lines(source, max_errors=max_errors, convert=convert)


def load_examples(source: str | os.PathLike[str], *, size: int = 256, seed: int = 0,
                  max_errors: int = 50, convert: RowConverter | None = None) -> list[Example]:
    """A built-in task (a name in `BUILTIN_TASKS`: ``size`` examples drawn with ``seed``) or
    a JSONL file (every row, in file order, each through ``convert`` if given; ``size`` and
    ``seed`` are then ignored). A built-in task with a ``convert`` is a `DatasetError`."""
    if isinstance(source, str) and source.startswith("builtin:"):
        if convert is not None:
            raise DatasetError(f"{source} is a built-in task: a data format applies to "
                               "JSONL files only")
        return builtin_task(source, size=size, seed=seed)
    return load_jsonl(source, max_errors=max_errors, convert=convert)


def load_jsonl_bytes(data: bytes, *, max_errors: int = 50) -> list[Example]:
    """`load_jsonl` from the bytes of an uploaded file."""
    return _load_lines(io.BytesIO(data), max_errors=max_errors)


def validate_jsonl_bytes(data: bytes, *, max_errors: int = 50) -> int:
    """Validate an uploaded file; return its number of rows or raise `DatasetError`."""
    return len(load_jsonl_bytes(data, max_errors=max_errors))


def validate_jsonl_file(path: str | os.PathLike[str], *, max_errors: int = 50) -> int:
    """`validate_jsonl_bytes` of a file, read a line at a time and keeping no rows: memory
    stays flat whatever the file's size."""
    with open(path, "rb") as f:
        return _count_lines(f, max_errors=max_errors)


def scan_jsonl_file(path: str | os.PathLike[str], keep: Callable[[Example], None], *,
                    convert: RowConverter | None = None, max_errors: int = 50) -> int:
    """Read a file a line at a time, handing each valid row (through ``convert`` if given)
    to ``keep``; return their number, or raise `DatasetError` once the whole file was read
    if any row is bad (``keep`` has then seen the good ones)."""
    with open(path, "rb") as f:
        return _scan_lines(f, max_errors=max_errors, keep=keep, convert=convert)


def _count_lines(lines: Iterable[str | bytes], *, max_errors: int) -> int:
    return _scan_lines(lines, max_errors=max_errors, keep=lambda example: None)


def _load_lines(lines: Iterable[str | bytes], *, max_errors: int,
                convert: RowConverter | None = None) -> list[Example]:
    examples: list[Example] = []
    _scan_lines(lines, max_errors=max_errors, keep=examples.append, convert=convert)
    return examples


def _scan_lines(lines: Iterable[str | bytes], *, max_errors: int,
                keep: Callable[[Example], None], convert: RowConverter | None = None) -> int:
    """Parse every line, hand each valid row to `keep`, and return their number; raise
    `DatasetError` once the whole input was read if any row is bad.

    Only the first ``max_errors`` row errors are kept, and the rest counted: a file of
    millions of bad rows costs no more memory than one of fifty."""
    if max_errors < 1:
        raise ValueError(f"max_errors must be >= 1, got {max_errors}")
    count = 0
    errors: list[RowError] = []
    total_errors = bad_rows = 0

    def bad(row_errors: Sequence[RowError]) -> None:
        nonlocal total_errors, bad_rows
        total_errors += len(row_errors)
        bad_rows += 1
        errors.extend(row_errors[:max_errors - len(errors)])

    seen_any = False
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                seen_any = True
                bad([RowError(number, "", f"not valid UTF-8 (byte {exc.start})")])
                continue
        else:
            text = raw
        if number == 1:
            # Editors on Windows write a byte-order mark; json.loads rejects it.
            text = text.removeprefix(_BOM)
        if not text.strip():
            continue
        seen_any = True
        result = parse_row(text, number, convert)
        if isinstance(result, Example):
            count += 1
            keep(result)
        else:
            bad(result)
    if not seen_any:
        bad([RowError(0, "", "no rows: the file is empty or holds only blank lines")])
    if total_errors:
        raise DatasetError.from_rows(errors, max_errors=max_errors, total_errors=total_errors,
                                     bad_rows=bad_rows)
    return count


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and break graders downstream.
    raise ValueError(f"{name} is not valid JSON")


def parse_row(text: str, line: int,
              convert: RowConverter | None = None) -> Example | list[RowError]:
    """Parse one JSONL line (through ``convert`` if given, once the JSON is known to be an
    object of sane depth and text): the `Example`, or every error found in it."""
    try:
        row = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return [RowError(line, "", f"invalid JSON: {exc.msg} (column {exc.colno})")]
    except ValueError as exc:
        return [RowError(line, "", f"invalid JSON: {exc}")]
    except RecursionError:  # json's C scanner refuses ~1,000 levels this way
        return [RowError(line, "", _TOO_DEEP)]
    if not isinstance(row, dict):
        return [RowError(line, "", f"must be a JSON object, got {json_type(row)}")]
    problem = _check_values(row, line)
    if problem is not None:
        return [problem]
    if convert is not None:
        converted = convert(row, line)
        if isinstance(converted, list):
            return converted
        row = converted
    if "messages" in row:
        errors = _check_messages(row, line)
        messages = [] if errors else [{"role": m["role"], "content": m["content"]}
                                      for m in row["messages"]]
    elif "prompt" in row:
        errors = _check_plain(row, line)
        messages = [] if errors else [{"role": "user", "content": row["prompt"]}]
    else:
        return [RowError(line, "", "must have 'messages' (OpenAI reinforcement format) or "
                                   "'prompt' and 'answer'")]
    if errors:
        return errors
    return Example(messages=messages, item=row, index=line)


def _check_values(row: dict[str, Any], line: int) -> RowError | None:
    """The first value of the row that nests too deep or holds a lone surrogate (which no
    UTF-8 encoder takes: the tokenizer and the sandbox failed on it at training time, issue
    15), as a RowError naming its field; None when there is none. Iterative, so that the
    walk itself cannot recurse too deep."""
    stack: list[tuple[object, str, int]] = [(row, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return RowError(line, path, _LONE_SURROGATE)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_ROW_DEPTH:
            return RowError(line, path, _TOO_DEEP)
        if isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
            continue
        for key, v in value.items():
            child = f"{path}.{key}" if path else key
            if _SURROGATE.search(key):
                return RowError(line, path, f"key {_short(key)}: {_LONE_SURROGATE}")
            stack.append((v, child, depth + 1))
    return None


def _check_messages(row: dict[str, Any], line: int) -> list[RowError]:
    errors: list[RowError] = []
    tools = row.get("tools")
    if tools not in (None, []):
        errors.append(RowError(line, "tools", "is not supported: prompts are text only"))
    messages = row["messages"]
    if not isinstance(messages, list):
        return [*errors, RowError(line, "messages",
                                  f"must be a list of messages, got {json_type(messages)}")]
    if not messages:
        return [*errors, RowError(line, "messages", "must not be empty")]
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            errors.append(RowError(line, path, "must be an object with 'role' and 'content', "
                                               f"got {json_type(message)}"))
            continue
        role = message.get("role")
        if role is None:
            errors.append(RowError(line, f"{path}.role", "is required"))
        elif role not in ROLES:
            errors.append(RowError(line, f"{path}.role",
                                   f"must be one of {', '.join(ROLES)}, got {_short(role)}"))
        content = message.get("content")
        if content is None:
            errors.append(RowError(line, f"{path}.content", "is required"))
        elif not isinstance(content, str):
            errors.append(RowError(line, f"{path}.content", "must be a string (text only), "
                                                            f"got {json_type(content)}"))
        elif not content.strip():
            errors.append(RowError(line, f"{path}.content", "must not be empty"))
    last = messages[-1]
    # Only reported when the role is otherwise valid, so one mistake gives one error.
    if isinstance(last, dict) and last.get("role") in ROLES and last["role"] != "user":
        errors.append(RowError(line, f"messages[{len(messages) - 1}].role",
                               f"the last message must have role user, got {last['role']!r}"))
    return errors


def _check_plain(row: dict[str, Any], line: int) -> list[RowError]:
    errors: list[RowError] = []
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        errors.append(RowError(line, "prompt", f"must be a string, got {json_type(prompt)}"))
    elif not prompt.strip():
        errors.append(RowError(line, "prompt", "must not be empty"))
    if "answer" not in row or row["answer"] is None:
        errors.append(RowError(line, "answer", "is required with 'prompt'"))
    else:
        answer = row["answer"]
        is_number = isinstance(answer, int | float) and not isinstance(answer, bool)
        if not (isinstance(answer, str) or is_number):
            errors.append(RowError(line, "answer",
                                   f"must be a string or a number, got {json_type(answer)}"))
        elif isinstance(answer, str) and not answer.strip():
            errors.append(RowError(line, "answer", "must not be empty"))
    return errors


def json_type(value: object) -> str:
    """JSON's name for the type of a parsed value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Built-in tasks

_BOXED = "Put your final answer in \\boxed{}."

BUILTIN_TASKS: Mapping[str, str] = MappingProxyType({
    "builtin:add": "a + b with a, b in 1..9, answered with just the number (81 problems)",
    "builtin:arithmetic": "reasoning-gym basic_arithmetic, 2 terms of 1 digit: the built-in "
                          "SmolLM2-135M-Instruct solves some, so training has signal",
    "builtin:chain_sum": "reasoning-gym chain_sum, 2 to 4 terms of 1 or 2 digits",
    "builtin:arithmetic_hard": "reasoning-gym basic_arithmetic, 3 to 4 terms of 1 or 2 digits, "
                               "with parentheses and negation",
})
"""Names of the built-in tasks, with a one-line description of each."""

# reasoning-gym dataset and config behind each reasoning-gym task. Countdown is left out:
# its answers are expressions with many right forms, which a math-verify grader cannot
# compare with one reference.
_GYM_TASKS: Mapping[str, tuple[str, dict[str, Any]]] = MappingProxyType({
    "builtin:arithmetic": ("basic_arithmetic",
                           {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "builtin:chain_sum": ("chain_sum",
                          {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2}),
    "builtin:arithmetic_hard": ("basic_arithmetic",
                                {"min_terms": 3, "max_terms": 4, "min_digits": 1,
                                 "max_digits": 2}),
})


def builtin_task(name: str, *, size: int, seed: int) -> list[Example]:
    """``size`` seeded examples of a built-in task (same name, size and seed: same data).

    Each item holds ``prompt``, ``answer`` (a string) and ``task`` (the name). Prompts ask
    for the answer in a form the math-verify grader reads: ``\\boxed{}`` for the
    reasoning-gym tasks, the bare number for ``builtin:add``.
    """
    if name not in BUILTIN_TASKS:
        raise DatasetError(f"unknown built-in task {name!r}; known: {', '.join(BUILTIN_TASKS)}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if name == "builtin:add":
        return _add_task(size, seed)
    # Imported here: reasoning-gym takes about a second to import and only these tasks need it.
    import reasoning_gym

    dataset_name, config = _GYM_TASKS[name]
    dataset = reasoning_gym.create_dataset(dataset_name, size=size, seed=seed, **config)
    examples = []
    for i, entry in enumerate(dataset):
        question = str(entry["question"])
        prompt = f"{question}\n{_BOXED}"
        item = {"prompt": prompt, "answer": str(entry["answer"]), "task": name,
                "question": question}
        examples.append(Example([{"role": "user", "content": prompt}], item, i + 1))
    return examples


def _add_task(size: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    examples = []
    for i in range(size):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        prompt = f"What is {a} + {b}? Answer with just the number."
        item = {"prompt": prompt, "answer": str(a + b), "task": "builtin:add"}
        examples.append(Example([{"role": "user", "content": prompt}], item, i + 1))
    return examples


# ---------------------------------------------------------------------------------------------
# Data cursor


def epoch_order(size: int, *, seed: int, epoch: int) -> list[int]:
    """The shuffled order of ``range(size)`` in one epoch; a pure function of its arguments."""
    # A string seed rather than seed + epoch: with a sum, run seed s in epoch 1 would repeat
    # the order of run seed s + 1 in epoch 0. random seeds str deterministically (SHA-512),
    # independent of PYTHONHASHSEED.
    order = list(range(size))
    random.Random(f"paec.data:{seed}:{epoch}").shuffle(order)
    return order


class DataCursor:
    """Deterministic batches cycling through shuffled epochs of a dataset.

    Batches run across epoch boundaries: a batch that empties one epoch continues with the
    next epoch's order. `state_dict` / `load_state_dict` carry the position, so a resumed
    run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, examples: Sequence[Example], *, seed: int) -> None:
        if not examples:
            raise ValueError("DataCursor needs at least one example")
        self._examples = list(examples)
        self._seed = seed
        self._epoch = 0
        self._position = 0
        self._order = epoch_order(len(self._examples), seed=seed, epoch=0)

    @property
    def epoch(self) -> int:
        """Epochs completed so far (0 during the first pass)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Examples already drawn from the current epoch."""
        return self._position

    def next_batch(self, n: int) -> list[Example]:
        """The next ``n`` examples (n may exceed the dataset: it then wraps, epoch by epoch)."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        batch: list[Example] = []
        while len(batch) < n:
            if self._position == len(self._order):
                self._epoch += 1
                self._position = 0
                self._order = epoch_order(len(self._examples), seed=self._seed,
                                          epoch=self._epoch)
            take = min(n - len(batch), len(self._order) - self._position)
            idx = self._order[self._position:self._position + take]
            batch.extend(self._examples[i] for i in idx)
            self._position += take
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where the cursor is, plus the seed and size it must be resumed with."""
        return {"epoch": self._epoch, "position": self._position, "seed": self._seed,
                "size": len(self._examples)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume from `state_dict`; the seed and dataset size must match, or the batches
        would silently differ from the interrupted run's."""
        for key, mine in (("seed", self._seed), ("size", len(self._examples))):
            if state[key] != mine:
                raise ValueError(f"DataCursor state has {key}={state[key]}, this cursor {mine}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self._examples):
            raise ValueError(f"DataCursor state out of range: epoch={epoch}, "
                             f"position={position}, size={len(self._examples)}")
        self._epoch, self._position = epoch, position
        self._order = epoch_order(len(self._examples), seed=self._seed, epoch=epoch)
