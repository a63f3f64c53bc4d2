"""paec.data: both JSONL forms, every validation error with its line and field, built-in
tasks, and the resumable data cursor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paec.data import (
    BUILTIN_TASKS,
    DataCursor,
    DatasetError,
    Example,
    RowError,
    builtin_task,
    load_examples,
    load_jsonl,
    load_jsonl_bytes,
    validate_jsonl_bytes,
)

GOOD_RFT = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}],
                       "answer": "4"})
GOOD_PLAIN = json.dumps({"prompt": "What is 3 + 3?", "answer": 6})


def errors_of(lines: list[str]) -> list[RowError]:
    with pytest.raises(DatasetError) as info:
        load_jsonl(lines)
    return info.value.errors


def only_error(lines: list[str]) -> RowError:
    errors = errors_of(lines)
    assert len(errors) == 1, errors
    return errors[0]


def rft(messages: Any, **extra: Any) -> str:
    return json.dumps({"messages": messages, **extra})


# ------------------------------------------------------------------------------ the two forms


def test_rft_rows_keep_every_key_in_item() -> None:
    row = {"messages": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "2 + 2?"}],
           "answer": "4", "difficulty": {"level": 1}}
    [example] = load_jsonl([json.dumps(row)])
    assert example.messages == row["messages"]
    assert example.item == row and example.item["difficulty"] == {"level": 1}
    assert example.index == 1 and example.answer == "4"


def test_rft_messages_keep_only_role_and_content() -> None:
    [example] = load_jsonl([rft([{"role": "user", "content": "hi", "name": "bob"}])])
    assert example.messages == [{"role": "user", "content": "hi"}]


def test_plain_rows_become_one_user_message() -> None:
    [example] = load_jsonl([json.dumps({"prompt": "3 + 3?", "answer": 6, "source": "x"})])
    assert example.messages == [{"role": "user", "content": "3 + 3?"}]
    assert example.item == {"prompt": "3 + 3?", "answer": 6, "source": "x"}
    assert example.answer == "6"


def test_rft_and_plain_rows_mix_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(f"{GOOD_RFT}\n{GOOD_PLAIN}\n", encoding="utf-8")
    examples = load_jsonl(path)
    assert [e.index for e in examples] == [1, 2]
    assert load_jsonl(str(path)) == examples


def test_assistant_turns_are_allowed_before_the_last_user_message() -> None:
    [example] = load_jsonl([rft([{"role": "user", "content": "1 + 1?"},
                                 {"role": "assistant", "content": "2"},
                                 {"role": "developer", "content": "Now harder."},
                                 {"role": "user", "content": "2 + 2?"}])])
    assert [m["role"] for m in example.messages] == ["user", "assistant", "developer", "user"]


def test_blank_lines_are_skipped_but_counted() -> None:
    examples = load_jsonl([GOOD_RFT, "", "   \n", GOOD_PLAIN + "\n"])
    assert [e.index for e in examples] == [1, 4]


def test_blank_lines_keep_error_line_numbers() -> None:
    assert only_error([GOOD_RFT, "", "{bad"]).line == 3


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_RFT.encode() + b"\r\n" + GOOD_PLAIN.encode())
    assert [e.index for e in load_jsonl(path)] == [1, 2]
    assert len(load_jsonl_bytes(path.read_bytes())) == 2


def test_bytes_validation_counts_rows() -> None:
    assert validate_jsonl_bytes(f"{GOOD_RFT}\n\n{GOOD_PLAIN}\n".encode()) == 2


def test_bytes_validation_reports_the_same_errors_as_lines() -> None:
    lines = [GOOD_RFT, "[1, 2]", rft([{"role": "bot", "content": "x"}])]
    with pytest.raises(DatasetError) as info:
        validate_jsonl_bytes("\n".join(lines).encode())
    assert info.value.errors == errors_of(lines)


def test_invalid_utf8_is_a_row_error() -> None:
    with pytest.raises(DatasetError) as info:
        load_jsonl_bytes(GOOD_RFT.encode() + b"\n" + b'{"prompt": "\xff", "answer": "1"}\n')
    [error] = info.value.errors
    assert (error.line, error.field) == (2, "") and "UTF-8" in error.message


# ------------------------------------------------------------------------- validation errors


def test_invalid_json() -> None:
    error = only_error([GOOD_RFT, '{"messages": [}'])
    assert (error.line, error.field) == (2, "") and error.message.startswith("invalid JSON")


def test_nan_is_not_json() -> None:
    error = only_error(['{"prompt": "x", "answer": NaN}'])
    assert error.message.startswith("invalid JSON")


def test_row_must_be_an_object() -> None:
    error = only_error(["[1, 2]"])
    assert (error.line, error.field) == (1, "") and "got array" in error.message


def test_row_of_neither_form() -> None:
    error = only_error([json.dumps({"question": "2 + 2?", "answer": "4"})])
    assert (error.line, error.field) == (1, "") and "'messages'" in error.message


def test_messages_must_be_a_list() -> None:
    error = only_error([rft("hello")])
    assert (error.field, error.message) == ("messages", "must be a list of messages, got string")


def test_empty_messages() -> None:
    assert only_error([rft([])]) == RowError(1, "messages", "must not be empty")


def test_message_must_be_an_object() -> None:
    error = only_error([rft(["hi", {"role": "user", "content": "x"}])])
    assert error.field == "messages[0]"


def test_missing_content() -> None:
    assert only_error([rft([{"role": "user"}])]) == RowError(1, "messages[0].content",
                                                              "is required")


def test_empty_content() -> None:
    error = only_error([GOOD_RFT, rft([{"role": "user", "content": "  "}])])
    assert error == RowError(2, "messages[0].content", "must not be empty")


def test_non_string_content() -> None:
    parts = [{"type": "text", "text": "hi"}]
    error = only_error([rft([{"role": "user", "content": parts}])])
    assert (error.field, error.message) == ("messages[0].content",
                                            "must be a string (text only), got array")


def test_missing_role() -> None:
    assert only_error([rft([{"content": "x"}])]) == RowError(1, "messages[0].role", "is required")


def test_bad_role_names_the_allowed_ones() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "bot", "content": "b"}, {"role": "user", "content": "u"}]
    lines = [GOOD_RFT] * 6 + [rft(messages)]
    error = only_error(lines)
    assert (error.line, error.field) == (7, "messages[2].role")
    assert error.message.startswith("must be one of system, developer, user, assistant")
    assert "'bot'" in error.message


def test_last_message_must_be_user() -> None:
    error = only_error([rft([{"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}])])
    assert (error.line, error.field) == (1, "messages[1].role")
    assert "last message must have role user" in error.message


def test_tools_are_rejected() -> None:
    error = only_error([rft([{"role": "user", "content": "q"}], tools=[{"type": "function"}])])
    assert error.field == "tools"


def test_plain_prompt_must_be_a_non_empty_string() -> None:
    assert only_error([json.dumps({"prompt": 3, "answer": "3"})]).field == "prompt"
    assert only_error([json.dumps({"prompt": "", "answer": "3"})]) == RowError(
        1, "prompt", "must not be empty")


def test_plain_answer_is_required_and_scalar() -> None:
    assert only_error([json.dumps({"prompt": "q"})]) == RowError(1, "answer",
                                                                  "is required with 'prompt'")
    error = only_error([json.dumps({"prompt": "q", "answer": [1]})])
    assert (error.field, error.message) == ("answer", "must be a string or a number, got array")
    assert only_error([json.dumps({"prompt": "q", "answer": True})]).field == "answer"


def test_every_error_of_a_row_is_reported() -> None:
    errors = errors_of([rft([{"role": "bot"}, {"role": "user", "content": 1}])])
    assert [e.field for e in errors] == ["messages[0].role", "messages[0].content",
                                         "messages[1].content"]


def test_every_bad_row_is_reported_and_nothing_is_returned() -> None:
    errors = errors_of(["{", GOOD_RFT, "3", GOOD_PLAIN, rft([])])
    assert [e.line for e in errors] == [1, 3, 5]


@pytest.mark.parametrize("lines", [[], ["", "  "]])
def test_empty_file_is_an_error(lines: list[str]) -> None:
    error = only_error(lines)
    assert error.line == 0 and "no rows" in error.message


def test_error_message_lists_errors_up_to_max_errors() -> None:
    with pytest.raises(DatasetError) as info:
        load_jsonl(["{"] * 7, max_errors=3)
    text = str(info.value)
    # Only the first max_errors are kept (issue 15: every one of 3M bad rows was); all counted.
    assert [e.line for e in info.value.errors] == [1, 2, 3]
    assert (info.value.total_errors, info.value.bad_rows) == (7, 7)
    assert text.startswith("invalid dataset: 7 error(s) in 7 row(s)")
    assert "line 3: invalid JSON" in text and "line 4:" not in text
    assert text.endswith("... and 4 more")


def test_error_message_shows_field_paths() -> None:
    with pytest.raises(DatasetError, match=r"line 1: messages\[0\]\.role: must be one of"):
        load_jsonl([rft([{"role": "bot", "content": "x"}])])


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------------------- built-in tasks


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_tasks_are_seeded(name: str) -> None:
    first = builtin_task(name, size=12, seed=3)
    assert builtin_task(name, size=12, seed=3) == first
    assert builtin_task(name, size=12, seed=4) != first
    assert len(first) == 12 and [e.index for e in first] == list(range(1, 13))
    for example in first:
        assert isinstance(example.item["answer"], str) and example.item["task"] == name
        assert example.messages == [{"role": "user", "content": example.item["prompt"]}]


def test_builtin_add_follows_its_template() -> None:
    for example in builtin_task("builtin:add", size=30, seed=0):
        prompt = example.item["prompt"]
        a, b = prompt.removeprefix("What is ").split("?")[0].split(" + ")
        assert prompt == f"What is {a} + {b}? Answer with just the number."
        assert 1 <= int(a) <= 9 and 1 <= int(b) <= 9 and example.answer == str(int(a) + int(b))


def test_reasoning_gym_tasks_ask_for_a_boxed_answer() -> None:
    for name in ("builtin:arithmetic", "builtin:chain_sum", "builtin:arithmetic_hard"):
        [example] = builtin_task(name, size=1, seed=0)
        assert example.item["prompt"].endswith("Put your final answer in \\boxed{}.")
        assert example.item["answer"].lstrip("-").isdigit()


def test_unknown_builtin_task_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError, match="builtin:add") as info:
        builtin_task("builtin:nope", size=4, seed=0)
    assert "builtin:nope" in str(info.value)


def test_load_examples_reads_files_and_builtins(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD_PLAIN + "\n", encoding="utf-8")
    assert len(load_examples(str(path), size=99, seed=0)) == 1
    assert load_examples("builtin:add", size=5, seed=1) == builtin_task("builtin:add", size=5,
                                                                         seed=1)


# ------------------------------------------------------------------------------- data cursor


def numbered(n: int) -> list[Example]:
    return [Example([{"role": "user", "content": str(i)}], {"prompt": str(i), "answer": "0"},
                    i + 1) for i in range(n)]


def ids(batch: list[Example]) -> list[int]:
    return [e.index for e in batch]


def test_cursor_resumes_with_the_same_batches() -> None:
    data = numbered(10)
    cursor = DataCursor(data, seed=5)
    for _ in range(4):
        cursor.next_batch(3)
    state = cursor.state_dict()
    expected = [ids(cursor.next_batch(3)) for _ in range(5)]
    resumed = DataCursor(data, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert [ids(resumed.next_batch(3)) for _ in range(5)] == expected


def test_cursor_epochs_are_permutations_that_differ() -> None:
    cursor = DataCursor(numbered(10), seed=0)
    first, second = ids(cursor.next_batch(10)), ids(cursor.next_batch(10))
    assert sorted(first) == sorted(second) == list(range(1, 11))
    assert first != second and cursor.epoch == 1 and cursor.position == 10


def test_cursor_batch_wraps_into_the_next_epoch() -> None:
    reference = DataCursor(numbered(5), seed=2)
    flat = ids(reference.next_batch(5)) + ids(reference.next_batch(5))
    cursor = DataCursor(numbered(5), seed=2)
    cursor.next_batch(3)
    assert ids(cursor.next_batch(4)) == flat[3:7]
    assert (cursor.epoch, cursor.position) == (1, 2)


def test_cursor_batch_larger_than_the_dataset() -> None:
    cursor = DataCursor(numbered(3), seed=0)
    batch = ids(cursor.next_batch(7))
    assert len(batch) == 7 and sorted(batch[:3]) == sorted(batch[3:6]) == [1, 2, 3]


def test_cursor_order_depends_on_the_seed() -> None:
    a = ids(DataCursor(numbered(20), seed=0).next_batch(20))
    b = ids(DataCursor(numbered(20), seed=1).next_batch(20))
    assert a != b


def test_cursor_state_from_another_dataset_is_refused() -> None:
    state = DataCursor(numbered(4), seed=0).state_dict()
    with pytest.raises(ValueError, match="size"):
        DataCursor(numbered(5), seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        DataCursor(numbered(4), seed=1).load_state_dict(state)


def test_validating_a_file_counts_rows_and_reports_bad_ones_like_the_bytes_path(
        tmp_path: Path) -> None:
    from paec.data import validate_jsonl_bytes, validate_jsonl_file

    good = b'{"prompt": "1+1", "answer": "2"}\n\n{"prompt": "2+2", "answer": "4"}\n'
    path = tmp_path / "good.jsonl"
    path.write_bytes(good)
    assert validate_jsonl_file(path) == validate_jsonl_bytes(good) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(good + b'{"prompt": 3}\n')
    with pytest.raises(DatasetError) as info:
        validate_jsonl_file(bad)
    assert {e.line for e in info.value.errors} == {4}  # the row has two faults


# ------------------------------------------------------------------------- hostile rows (issue 15)


def test_a_flood_of_bad_rows_keeps_only_the_first_errors(tmp_path: Path) -> None:
    from paec.data import validate_jsonl_file

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"x\n" * 20_000 + b'{"prompt": "p", "answer": 1, "messages": 3}\n')
    with pytest.raises(DatasetError) as info:
        validate_jsonl_file(path, max_errors=5)
    assert [e.line for e in info.value.errors] == [1, 2, 3, 4, 5]
    assert (info.value.total_errors, info.value.bad_rows) == (20_001, 20_001)
    assert str(info.value).endswith("... and 19996 more")


def test_a_row_with_two_errors_counts_once_as_a_row() -> None:
    with pytest.raises(DatasetError) as info:
        load_jsonl([json.dumps({"prompt": 3})], max_errors=1)
    assert (info.value.total_errors, info.value.bad_rows, len(info.value.errors)) == (2, 1, 1)


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
def test_a_row_nested_too_deep_is_a_row_error(depth: int) -> None:
    deep = '{"prompt": "p", "answer": "1", "x": ' + "[" * depth + "]" * depth + "}"
    error = only_error([GOOD_PLAIN, deep])
    assert error.line == 2 and "deeper than" in error.message


def test_a_row_nested_within_the_limit_loads() -> None:
    from paec.data import MAX_ROW_DEPTH

    nested = "[" * (MAX_ROW_DEPTH - 1) + "]" * (MAX_ROW_DEPTH - 1)
    [example] = load_jsonl(['{"prompt": "p", "answer": "1", "x": ' + nested + "}"])
    assert example.answer == "1"


@pytest.mark.parametrize(("row", "field"), [
    ('{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
    ('{"prompt": "p", "answer": "\\udfff"}', "answer"),
    ('{"prompt": "p", "answer": "1", "meta": {"tags": ["ok", "\\ud83d"]}}', "meta.tags[1]"),
    ('{"prompt": "p", "answer": "1", "\\ud800": 1}', ""),
])
def test_a_lone_surrogate_is_a_row_error_naming_the_field(row: str, field: str) -> None:
    error = only_error([row])
    assert (error.line, error.field) == (1, field) and "lone surrogate" in error.message


def test_a_surrogate_pair_is_text() -> None:
    [example] = load_jsonl(['{"prompt": "smile \\ud83d\\ude00", "answer": "1"}'])
    assert example.messages[0]["content"] == "smile \U0001f600"
