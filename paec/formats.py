"""The public math datasets' JSONL layouts, converted into paec's rows (`paec.data`).

The files are the user's (nothing is downloaded; docs/datasets.md says where each dataset is
published); the conversions are ours. Each layout is a `DataFormat` member
(`paec.config.training`, so that `TrainConfig` validates the name) with one function here
(`CONVERTERS`): it takes a parsed row and its line number and returns paec's row, or the
`RowError` s naming the line and the field of the source layout.

    gsm8k  {"question", "answer": "<reasoning> #### 1,234"}  -> answer "1234"
    math   {"problem", "solution", "answer"?, "level"?, "type"?}  -> the "answer" field, else
           the content of the solution's last \\boxed{...} (braces balanced: \\boxed{\\frac{1}{2}})
    dapo   {"prompt": [{"role", "content"}, ...], "reward_model": {"ground_truth"}, ...}
           -> the messages as they are, answer = ground_truth
    aime   {"problem" or "question", "answer"}  -> an integer from 0 to 999, as text ("033": "33")
    amc    {"problem" or "question", "answer"}  -> a number or a string (142.0: "142")

A converted row is then validated as any row of paec's format, so it reaches the trainer and
the graders exactly as a hand-written one would; its other keys are kept for `{{item.key}}`
(GSM8K's worked answer as ``solution``). Loading: `row_converter` gives the
`paec.data.RowConverter` that `paec.data.load_examples(..., convert=...)` applies;
`load_config_data` loads a `TrainConfig`'s training and validation data, each file through
its own format (`data_format`, `validation_data_format`); `convert_file` writes a converted
file (`paec files convert`, and `paec files upload --format`, which converts first).

Prompts: a bare problem becomes ``prompt_template`` with ``{problem}`` replaced,
`DEFAULT_PROMPT_TEMPLATE` unless given. DAPO rows already hold DAPO's own prompt
(`DAPO_PROMPT_TEMPLATE`) and keep it, unless a template is given: the problem is then taken out
of DAPO's prompt and put in the template's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from paec.config.training import DataFormat, TrainConfig
from paec.data import (
    ROLES,
    Example,
    RowConverter,
    json_type,
    load_examples,
    scan_jsonl_file,
)
from paec.errors import DatasetError, RowError
from paec.grading.answer import last_boxed

PROBLEM = "{problem}"
"""The placeholder of a prompt template that the problem's text replaces."""
DEFAULT_PROMPT_TEMPLATE = (PROBLEM + "\n\nPlease reason step by step, and put your final "
                           "answer within \\boxed{}.")
"""Ours: the problem, then the chain-of-thought instruction of the Qwen2.5-Math model cards,
which asks for the answer where the answer checker looks first (`paec.grading.answer`: the
last \\boxed{})."""
DAPO_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should "
    "be of the form Answer: $Answer (without quotes) where $Answer is the answer to the "
    "problem.\n\n" + PROBLEM + "\n\nRemember to put your answer on its own line after "
    "\"Answer:\".")
"""DAPO's own prompt, as every row of DAPO-Math-17K holds it: the answer on a last line
"Answer: ...", which the answer checker also reads (math-verify's answer-anchored extraction,
else the last number). Pass it as ``prompt_template`` to prompt another layout as DAPO did."""
_DAPO_HEAD, _DAPO_TAIL = DAPO_PROMPT_TEMPLATE.split(PROBLEM)
_RESERVED = frozenset({"messages", "tools", "prompt", "answer"})
"""Keys of paec's format that a converted row sets itself; a source row's own are dropped."""
_NUMBER_COMMA = re.compile(r"(?<=\d),(?=\d)")
_AIME_ANSWER = re.compile(r"\d{1,3}")

Row = dict[str, Any]
FormatFunction = Callable[[Row, int, str | None], Row | list[RowError]]
"""One layout's conversion: (source row, line, prompt template or None) -> paec's row, or
the errors naming the line and the source's field."""


# ---------------------------------------------------------------------------------------------
# Field readers: each appends a RowError naming the field when the value is unusable


def _text(row: Row, key: str, line: int, errors: list[RowError]) -> str | None:
    """``row[key]`` as a non-empty string, or None with an error appended."""
    value = row.get(key)
    if value is None:
        errors.append(RowError(line, key, "is required"))
    elif not isinstance(value, str):
        errors.append(RowError(line, key, f"must be a string, got {json_type(value)}"))
    elif not value.strip():
        errors.append(RowError(line, key, "must not be empty"))
    else:
        return value
    return None


def _problem(row: Row, line: int, errors: list[RowError]) -> str | None:
    """The problem's text: ``problem``, else ``question``."""
    if row.get("problem") is None and row.get("question") is not None:
        return _text(row, "question", line, errors)
    if row.get("problem") is None:
        errors.append(RowError(line, "problem", "is required (or 'question')"))
        return None
    return _text(row, "problem", line, errors)


def _answer(value: object, field: str, line: int, errors: list[RowError]) -> str | None:
    """A reference answer (a non-empty string or a number) as text; an integral float
    loses its ".0" (AMC files hold 142.0 for 142)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):  # 1e400 reads as inf
        return str(int(value)) if value.is_integer() else repr(value)
    if value is None:
        errors.append(RowError(line, field, "is required"))
    elif isinstance(value, str):
        errors.append(RowError(line, field, "must not be empty"))
    elif isinstance(value, float):
        errors.append(RowError(line, field, f"must be a finite number, got {value}"))
    else:
        errors.append(RowError(line, field,
                               f"must be a string or a number, got {json_type(value)}"))
    return None


def _prompted(template: str | None, problem: str) -> str:
    return (template or DEFAULT_PROMPT_TEMPLATE).replace(PROBLEM, problem.strip())


def _plain(row: Row, prompt: str, answer: str, **renamed: Any) -> Row:
    """paec's plain row: prompt, answer, the source's other keys, then ``renamed``."""
    kept = {k: v for k, v in row.items() if k not in _RESERVED}
    return {"prompt": prompt, "answer": answer, **kept, **renamed}


# ---------------------------------------------------------------------------------------------
# The layouts, one function each


def gsm8k_row(row: Row, line: int, template: str | None) -> Row | list[RowError]:
    """GSM8K: the final answer is what follows the last ``####`` of ``answer``, with the
    commas of numbers removed as GSM8K's own evaluation does ("1,234" -> "1234"); the worked
    answer is kept as ``solution``."""
    errors: list[RowError] = []
    question = _text(row, "question", line, errors)
    solution = _text(row, "answer", line, errors)
    final = ""
    if solution is not None:
        _, sep, tail = solution.rpartition("####")
        final = _NUMBER_COMMA.sub("", tail.strip())
        if not sep:
            errors.append(RowError(line, "answer", "has no '#### <final answer>' line "
                                                   "(GSM8K's layout)"))
        elif not final:
            errors.append(RowError(line, "answer", "has nothing after its '####'"))
    if errors or question is None or solution is None:
        return errors
    return _plain(row, _prompted(template, question), final, solution=solution)


def math_row(row: Row, line: int, template: str | None) -> Row | list[RowError]:
    """MATH / MATH-500: the ``answer`` field when the row has one (MATH-500 does), else the
    content of the last complete ``\\boxed{...}`` of ``solution`` (Hendrycks' MATH), read by
    the answer checker's own `last_boxed` (nested and escaped braces balanced)."""
    errors: list[RowError] = []
    problem = _problem(row, line, errors)
    answer: str | None = None
    if row.get("answer") is not None:
        answer = _answer(row["answer"], "answer", line, errors)
    else:
        solution = row.get("solution")
        if solution is None:
            errors.append(RowError(line, "solution", "is required when the row has no "
                                                     "'answer'"))
        elif not isinstance(solution, str):
            errors.append(RowError(line, "solution",
                                   f"must be a string, got {json_type(solution)}"))
        else:
            answer = last_boxed(solution)
            if answer is None:
                errors.append(RowError(line, "solution", "holds no complete \\boxed{...} "
                                                         "answer, and the row has no 'answer'"))
    if errors or problem is None or answer is None:
        return errors
    return _plain(row, _prompted(template, problem), answer)


def dapo_row(row: Row, line: int, template: str | None) -> Row | list[RowError]:
    """DAPO-Math-17K: ``prompt`` is the conversation (kept as paec's ``messages``), the
    answer ``reward_model.ground_truth``. With a template, the problem is taken out of DAPO's
    own prompt (`DAPO_PROMPT_TEMPLATE`) and re-prompted. A ``prompt`` that is a string is
    read as the bare problem (deduplicated copies store it so)."""
    errors: list[RowError] = []
    reward = row.get("reward_model")
    answer: str | None = None
    if not isinstance(reward, dict):
        errors.append(RowError(line, "reward_model", "must be an object with 'ground_truth', "
                                                     f"got {json_type(reward)}"))
    else:
        answer = _answer(reward.get("ground_truth"), "reward_model.ground_truth", line, errors)
    prompt = row.get("prompt")
    messages: list[dict[str, str]] | None = None
    problem: str | None = None
    if isinstance(prompt, str):
        problem = _text(row, "prompt", line, errors)
    else:
        messages = _dapo_messages(prompt, line, errors)
        if messages is not None and template is not None:
            problem = _dapo_problem(messages, line, errors)
    if errors or answer is None:
        return errors
    if problem is not None:
        return _plain(row, _prompted(template, problem), answer)
    kept = {k: v for k, v in row.items() if k not in _RESERVED}
    return {"messages": messages, "answer": answer, **kept}


def _dapo_messages(prompt: object, line: int,
                   errors: list[RowError]) -> list[dict[str, str]] | None:
    """DAPO's ``prompt`` as messages, errors naming ``prompt[i]``: a non-empty list of
    {"role", "content"} with text contents and the user's last."""
    if not isinstance(prompt, list) or not prompt:
        shown = "an empty array" if prompt == [] else json_type(prompt)
        errors.append(RowError(line, "prompt", "must be a non-empty list of messages "
                                               f"(role, content), got {shown}"))
        return None
    before = len(errors)
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            errors.append(RowError(line, f"prompt[{i}]", "must be an object with 'role' and "
                                                         f"'content', got {json_type(message)}"))
            continue
        if message.get("role") not in ROLES:
            errors.append(RowError(line, f"prompt[{i}].role", f"must be one of "
                                   f"{', '.join(ROLES)}, got {message.get('role')!r:.40}"))
        content = message.get("content")
        if not isinstance(content, str):
            errors.append(RowError(line, f"prompt[{i}].content",
                                   f"must be a string, got {json_type(content)}"))
        elif not content.strip():
            errors.append(RowError(line, f"prompt[{i}].content", "must not be empty"))
    if len(errors) > before:
        return None
    if prompt[-1]["role"] != "user":
        errors.append(RowError(line, f"prompt[{len(prompt) - 1}].role",
                               f"the last message must have role user, got "
                               f"{prompt[-1]['role']!r}"))
        return None
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _dapo_problem(messages: list[dict[str, str]], line: int,
                  errors: list[RowError]) -> str | None:
    """The problem inside DAPO's own prompt, for re-prompting with another template."""
    content = messages[-1]["content"]
    if (len(messages) == 1 and content.startswith(_DAPO_HEAD) and content.endswith(_DAPO_TAIL)
            and content[len(_DAPO_HEAD):len(content) - len(_DAPO_TAIL)].strip()):
        return content[len(_DAPO_HEAD):len(content) - len(_DAPO_TAIL)]
    errors.append(RowError(line, "prompt", "is not DAPO's own one-message prompt, so a "
                                           "prompt template cannot replace it (convert "
                                           "without one to keep the row's prompt)"))
    return None


def aime_row(row: Row, line: int, template: str | None) -> Row | list[RowError]:
    """AIME: ``answer`` is an integer from 0 to 999 (a number, or digits such as "033"),
    given as its decimal text."""
    errors: list[RowError] = []
    problem = _problem(row, line, errors)
    value = row.get("answer")
    answer: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        answer = value
    elif isinstance(value, float) and value.is_integer():
        answer = int(value)
    elif isinstance(value, str) and _AIME_ANSWER.fullmatch(value.strip()):
        answer = int(value.strip())
    if answer is None or not 0 <= answer <= 999:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        errors.append(RowError(line, "answer", "must be an integer from 0 to 999 (AIME's "
                                               f"answers), got {shown}"))
    if errors or problem is None or answer is None:
        return errors
    return _plain(row, _prompted(template, problem), str(answer))


def amc_row(row: Row, line: int, template: str | None) -> Row | list[RowError]:
    """AMC (and any {"problem" or "question", "answer"} file): the answer as it is, a number
    as its text (142.0: "142")."""
    errors: list[RowError] = []
    problem = _problem(row, line, errors)
    answer = _answer(row.get("answer"), "answer", line, errors)
    if errors or problem is None or answer is None:
        return errors
    return _plain(row, _prompted(template, problem), answer)


CONVERTERS: Mapping[DataFormat, FormatFunction] = MappingProxyType({
    DataFormat.GSM8K: gsm8k_row,
    DataFormat.MATH: math_row,
    DataFormat.DAPO: dapo_row,
    DataFormat.AIME: aime_row,
    DataFormat.AMC: amc_row,
})
"""The function of each layout."""


# ---------------------------------------------------------------------------------------------
# Loading and writing


def parse_format(value: DataFormat | str) -> DataFormat:
    """A layout by name; an unknown one is a `DatasetError` listing the known ones."""
    try:
        return DataFormat(str(value))
    except ValueError:
        known = ", ".join(f.value for f in DataFormat)
        raise DatasetError(f"unknown data format {str(value)!r}; known: {known}") from None


def row_converter(data_format: DataFormat | str | None,
                  prompt_template: str | None = None) -> RowConverter | None:
    """The `paec.data.RowConverter` of a layout (None: paec's own rows, no conversion).
    ``prompt_template`` must hold ``{problem}``; None is each layout's default (see the
    module docstring)."""
    if data_format is None:
        return None
    function = CONVERTERS[parse_format(data_format)]
    if prompt_template is not None and PROBLEM not in prompt_template:
        raise DatasetError(f"prompt_template must contain {PROBLEM} (where the problem goes),"
                           f" got {prompt_template[:80]!r}")

    def convert(row: Row, line: int) -> Row | list[RowError]:
        return function(row, line, prompt_template)

    return convert


def load_config_data(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    """The examples a `TrainConfig` trains on and evaluates on (the second list empty
    without validation_data): each file through its own data format (`data_format`,
    `validation_data_format`), a built-in validation task drawn with seed + 1 so that it is
    not the training draw."""
    train = load_examples(cfg.train_data, size=cfg.train_size, seed=cfg.seed,
                          convert=row_converter(cfg.data_format))
    if cfg.validation_data is None:
        return train, []
    validation = load_examples(cfg.validation_data, size=cfg.validation_size,
                               seed=cfg.seed + 1,
                               convert=row_converter(cfg.validation_data_format))
    return train, validation


@dataclass(frozen=True)
class Converted:
    """What `convert_file` wrote."""

    rows: int
    """Rows written."""
    duplicates: int
    """Rows left out as repeats of an earlier row (with ``unique`` only)."""


def convert_file(source: str | os.PathLike[str], destination: str | os.PathLike[str],
                 data_format: DataFormat | str, *, prompt_template: str | None = None,
                 unique: bool = False, max_errors: int = 50) -> Converted:
    """Convert a JSONL file of a layout into paec's JSONL at ``destination``, a line at a
    time (memory stays flat). ``unique`` leaves out a row whose prompt and answer repeat an
    earlier row's (the published DAPO-Math-17K repeats each problem about 100 times).

    All or nothing: a bad row is a `DatasetError` listing every bad row's line and field
    once the whole file was read, and ``destination`` is then left as it was."""
    convert = row_converter(data_format, prompt_template)
    target = Path(destination)
    partial = target.with_name(target.name + ".part")
    seen: set[bytes] = set()
    rows = duplicates = 0

    with open(partial, "w", encoding="utf-8") as out:
        def keep(example: Example) -> None:
            nonlocal rows, duplicates
            if unique:
                key = json.dumps([example.messages, example.answer]).encode()
                digest = hashlib.blake2b(key, digest_size=16).digest()
                if digest in seen:
                    duplicates += 1
                    return
                seen.add(digest)
            out.write(json.dumps(example.item, ensure_ascii=False) + "\n")
            rows += 1

        try:
            scan_jsonl_file(source, keep, convert=convert, max_errors=max_errors)
        except BaseException:
            out.close()
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    return Converted(rows=rows, duplicates=duplicates)
