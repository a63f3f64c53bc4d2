"""paec.formats: every public layout converted into paec's rows (answers extracted, nested
\\boxed{}, GSM8K's commas, AIME's integers), bad rows named by line and field, the prompt
templates, file conversion; the rows produced load as paec's own and the math_verify grader
pays a correct \\boxed{} completion for them. The fixtures are written here, in each
dataset's published layout (nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from paec.config.training import DataFormat, default_grader
from paec.data import Example, load_examples, load_jsonl
from paec.errors import DatasetError, RowError
from paec.formats import (
    CONVERTERS,
    DAPO_PROMPT_TEMPLATE,
    DEFAULT_PROMPT_TEMPLATE,
    convert_file,
    row_converter,
)
from paec.grading.graders import build_grader

DAPO_PROBLEM = "Find the number of positive divisors of $2^{10}$."
GSM8K = {"question": "A shop sold 1,200 pens on Monday and 34 on Tuesday. How many in all?",
         "answer": "1,200 + 34 = <<1200+34=1234>>1,234 pens.\n#### 1,234"}
MATH = {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?", "level": "Level 1",
        "type": "Prealgebra",
        "solution": "We get $\\boxed{\\frac{2}{4}}$, that is $\\boxed{\\frac{1}{2}}$."}
MATH_500 = {"problem": "Convert $(0,3)$ to polar coordinates.", "subject": "Precalculus",
            "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
            "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "level": 2,
            "unique_id": "test/precalculus/807.json"}
DAPO = {"data_source": "math_dapo",
        "prompt": [{"role": "user",
                    "content": DAPO_PROMPT_TEMPLATE.replace("{problem}", DAPO_PROBLEM)}],
        "ability": "MATH",
        "reward_model": {"ground_truth": "11", "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": "9a9b6eb4-a1cb-49d1-8c1e-62eaf2f74079"}}
AIME = {"id": 60, "problem": "Find the remainder when $2^{100}$ is divided by $1000$.",
        "answer": "376", "url": "https://example.org/aime", "year": 2024}
AMC = {"id": 0, "problem": "What is $\\frac{3}{2} \\cdot 2$?", "answer": 3.0}

# (layout, a row in it, the answer paec's row must hold, a correct completion)
CASES: list[tuple[DataFormat, dict[str, Any], str, str]] = [
    (DataFormat.GSM8K, GSM8K, "1234", "In all 1,234 pens. \\boxed{1234}"),
    (DataFormat.MATH, MATH, "\\frac{1}{2}", "So the sum is \\boxed{\\dfrac12}."),
    (DataFormat.MATH, MATH_500, "\\left( 3, \\frac{\\pi}{2} \\right)",
     "The point is \\boxed{(3, \\frac{\\pi}{2})}."),
    (DataFormat.DAPO, DAPO, "11", "There are eleven divisors: \\boxed{11}"),
    (DataFormat.AIME, AIME, "376", "The remainder is \\boxed{376}."),
    (DataFormat.AMC, AMC, "3", "The product is \\boxed{3}."),
]


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def convert(data_format: DataFormat | str, row: dict[str, Any],
            template: str | None = None) -> Example:
    examples = load_jsonl([json.dumps(row)], convert=row_converter(data_format, template))
    assert len(examples) == 1
    return examples[0]


def row_errors(data_format: DataFormat | str, rows: list[Any]) -> list[RowError]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    with pytest.raises(DatasetError) as info:
        load_jsonl(lines, convert=row_converter(data_format))
    return info.value.errors


# ---- each layout ----

def test_every_layout_has_its_function() -> None:
    assert set(CONVERTERS) == set(DataFormat)


def test_the_formats_and_the_cli_that_converts_import_no_torch() -> None:
    code = ("import sys, paec.formats, client.commands.files; bad = sorted(m for m in "
            "sys.modules if m.split('.')[0] in {'torch', 'transformers', 'numpy', 'sympy', "
            "'math_verify'}); print(bad); assert not bad")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("data_format", "row", "answer", "completion"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_answer_is_extracted_and_a_correct_boxed_completion_is_paid(
        data_format: DataFormat, row: dict[str, Any], answer: str, completion: str,
        tmp_path: Path) -> None:
    example = convert(data_format, row)
    assert example.answer == answer
    # the converted row is one of paec's own: it loads again with no conversion at all
    written = write(tmp_path / "ours.jsonl", [example.item])
    assert load_jsonl(written)[0] == Example(example.messages, example.item, 1)
    grader = build_grader(default_grader())
    results = grader.grade_many([completion, "\\boxed{999999}"], [example.item] * 2)
    assert [r.reward for r in results] == [1.0, 0.0], results
    assert not any(r.has_error for r in results), results


def test_gsm8k_takes_the_number_after_the_hashes_without_its_commas() -> None:
    example = convert(DataFormat.GSM8K, GSM8K)
    assert example.item["answer"] == "1234"
    assert example.item["solution"] == GSM8K["answer"]  # the worked answer stays available
    assert example.item["question"] == GSM8K["question"]
    assert example.messages == [{"role": "user", "content": DEFAULT_PROMPT_TEMPLATE.replace(
        "{problem}", GSM8K["question"])}]
    negative = convert(DataFormat.GSM8K, {"question": "q?", "answer": "x #### y\n#### -2,500"})
    assert negative.answer == "-2500"


def test_math_reads_the_last_box_with_nested_and_escaped_braces() -> None:
    assert convert(DataFormat.MATH, MATH).answer == "\\frac{1}{2}"
    nested = {"problem": "p", "solution": "\\boxed{\\sqrt{\\frac{1}{2}}} or \\boxed{\\{1, 2\\}}"}
    assert convert(DataFormat.MATH, nested).answer == "\\{1, 2\\}"
    unclosed = {"problem": "p", "solution": "\\boxed{7} and then \\boxed{\\frac{1}{2}"}
    assert convert(DataFormat.MATH, unclosed).answer == "7"
    item = convert(DataFormat.MATH, MATH).item
    assert (item["level"], item["type"], item["solution"]) == ("Level 1", "Prealgebra",
                                                               MATH["solution"])


def test_math_prefers_the_answer_field_to_the_solution() -> None:
    row = {"problem": "p", "solution": "\\boxed{1}", "answer": "2"}
    assert convert(DataFormat.MATH, row).answer == "2"
    assert convert(DataFormat.MATH, {"problem": "p", "answer": 0.5}).answer == "0.5"


def test_dapo_keeps_its_messages_and_reads_the_ground_truth() -> None:
    example = convert(DataFormat.DAPO, DAPO)
    assert example.messages == DAPO["prompt"]
    assert example.answer == "11"
    assert example.item["data_source"] == "math_dapo"
    assert example.item["extra_info"] == DAPO["extra_info"]
    assert "prompt" not in example.item
    number = convert(DataFormat.DAPO, DAPO | {"reward_model": {"ground_truth": 34}})
    assert number.answer == "34"


def test_a_dapo_row_is_reprompted_with_a_given_template() -> None:
    example = convert(DataFormat.DAPO, DAPO, DEFAULT_PROMPT_TEMPLATE)
    assert example.messages == [{"role": "user", "content": DEFAULT_PROMPT_TEMPLATE.replace(
        "{problem}", DAPO_PROBLEM)}]
    assert example.answer == "11"
    other = DAPO | {"prompt": [{"role": "user", "content": "Just solve: 1 + 1"}]}
    errors = row_errors_with(DataFormat.DAPO, [other], DEFAULT_PROMPT_TEMPLATE)
    assert [(e.line, e.field) for e in errors] == [(1, "prompt")]
    assert "DAPO's own" in errors[0].message


def test_a_dapo_prompt_given_as_a_string_is_the_problem() -> None:
    example = convert(DataFormat.DAPO, DAPO | {"prompt": DAPO_PROBLEM})
    assert example.messages[0]["content"] == DEFAULT_PROMPT_TEMPLATE.replace("{problem}",
                                                                             DAPO_PROBLEM)


@pytest.mark.parametrize(("answer", "expected"), [
    ("376", "376"), ("033", "33"), (204, "204"), (0, "0"), (999.0, "999"), (" 7 ", "7"),
])
def test_aime_answers_are_integers_from_0_to_999(answer: object, expected: str) -> None:
    assert convert(DataFormat.AIME, AIME | {"answer": answer}).answer == expected


@pytest.mark.parametrize("answer", [1000, -1, "12.5", 12.5, "abc", True, None, "", [3]])
def test_an_aime_answer_that_is_no_such_integer_names_the_field(answer: object) -> None:
    errors = row_errors(DataFormat.AIME, [AIME | {"answer": answer}])
    assert [(e.line, e.field) for e in errors] == [(1, "answer")]
    assert "integer from 0 to 999" in errors[0].message


def test_aime_and_amc_take_a_question_when_there_is_no_problem() -> None:
    for data_format in (DataFormat.AIME, DataFormat.AMC):
        example = convert(data_format, {"question": "What is 5?", "answer": 5})
        assert example.messages[0]["content"].startswith("What is 5?\n\n")
        assert example.answer == "5"


@pytest.mark.parametrize(("answer", "expected"), [
    (142.0, "142"), (0.25, "0.25"), (-3, "-3"), ("\\frac{1}{3}", "\\frac{1}{3}"), ("C", "C"),
])
def test_amc_answers_are_numbers_or_strings(answer: object, expected: str) -> None:
    assert convert(DataFormat.AMC, AMC | {"answer": answer}).answer == expected


# ---- bad rows ----

def row_errors_with(data_format: DataFormat, rows: list[Any],
                    template: str) -> list[RowError]:
    with pytest.raises(DatasetError) as info:
        load_jsonl([json.dumps(r) for r in rows], convert=row_converter(data_format, template))
    return info.value.errors


@pytest.mark.parametrize(("data_format", "bad", "field", "words"), [
    (DataFormat.GSM8K, {"question": "q", "answer": "it is 4"}, "answer", "'####"),
    (DataFormat.GSM8K, {"question": "q", "answer": "it is #### "}, "answer", "nothing after"),
    (DataFormat.GSM8K, {"answer": "#### 4"}, "question", "is required"),
    (DataFormat.GSM8K, {"question": 7, "answer": "#### 4"}, "question", "must be a string"),
    (DataFormat.MATH, {"problem": "p", "solution": "it is 4"}, "solution", "\\boxed"),
    (DataFormat.MATH, {"problem": "p", "solution": "\\boxed{4"}, "solution", "\\boxed"),
    (DataFormat.MATH, {"problem": "p"}, "solution", "is required"),
    (DataFormat.MATH, {"problem": " ", "answer": "4"}, "problem", "must not be empty"),
    (DataFormat.MATH, {"problem": "p", "answer": {"x": 1}}, "answer", "string or a number"),
    (DataFormat.DAPO, DAPO | {"reward_model": {"style": "rule"}}, "reward_model.ground_truth",
     "is required"),
    (DataFormat.DAPO, DAPO | {"reward_model": "11"}, "reward_model", "must be an object"),
    (DataFormat.DAPO, DAPO | {"prompt": []}, "prompt", "non-empty list"),
    (DataFormat.DAPO, DAPO | {"prompt": [{"role": "robot", "content": "hi"}]}, "prompt[0].role",
     "must be one of"),
    (DataFormat.DAPO, DAPO | {"prompt": [{"role": "user", "content": ""}]},
     "prompt[0].content", "must not be empty"),
    (DataFormat.DAPO, DAPO | {"prompt": [{"role": "user", "content": "q"},
                                         {"role": "assistant", "content": "a"}]},
     "prompt[1].role", "last message"),
    (DataFormat.AIME, {"answer": "12"}, "problem", "is required (or 'question')"),
    (DataFormat.AMC, {"problem": "p", "answer": True}, "answer", "string or a number"),
    (DataFormat.AMC, {"problem": "p"}, "answer", "is required"),
    (DataFormat.AMC, '{"problem": "p", "answer": 1e400}', "answer", "finite number"),
])
def test_a_bad_row_is_named_by_its_line_and_field(data_format: DataFormat,
                                                  bad: dict[str, Any] | str, field: str,
                                                  words: str) -> None:
    good = next(row for fmt, row, _, _ in CASES if fmt is data_format)
    # line 2 is blank: error lines are the file's line numbers
    errors = row_errors(data_format, [good, "", bad, good])
    assert [(e.line, e.field) for e in errors] == [(3, field)], errors
    assert words in errors[0].message


def test_every_bad_row_of_a_file_is_reported_at_once() -> None:
    rows = [GSM8K, {"question": "q"}, "not json", [1], GSM8K, {"question": "", "answer": "4"}]
    errors = row_errors(DataFormat.GSM8K, rows)
    assert [(e.line, e.field) for e in errors] == [(2, "answer"), (3, ""), (4, ""),
                                                   (6, "question"), (6, "answer")]
    assert "invalid JSON" in errors[1].message and "JSON object" in errors[2].message


def test_a_row_in_paecs_own_format_is_not_a_gsm8k_row() -> None:
    errors = row_errors(DataFormat.GSM8K, [{"prompt": "What is 1 + 1?", "answer": "2"}])
    assert [(e.line, e.field) for e in errors] == [(1, "question"), (1, "answer")]


# ---- options ----

def test_a_prompt_template_puts_the_problem_where_it_says() -> None:
    example = convert(DataFormat.AIME, AIME, "Problem: {problem}\nAnswer in \\boxed{}.")
    assert example.messages[0]["content"] == f"Problem: {AIME['problem']}\nAnswer in \\boxed{{}}."
    dapo_style = convert(DataFormat.GSM8K, GSM8K, DAPO_PROMPT_TEMPLATE)
    assert dapo_style.messages[0]["content"].startswith("Solve the following math problem")
    assert GSM8K["question"] in dapo_style.messages[0]["content"]


def test_a_template_without_the_problem_and_an_unknown_format_are_refused() -> None:
    with pytest.raises(DatasetError, match=r"prompt_template must contain \{problem\}"):
        row_converter(DataFormat.MATH, "Solve it.")
    with pytest.raises(DatasetError, match="unknown data format 'gsm9k'; known: gsm8k, math"):
        row_converter("gsm9k")
    assert row_converter(None) is None


def test_a_built_in_task_takes_no_format() -> None:
    with pytest.raises(DatasetError, match="built-in task"):
        load_examples("builtin:add", convert=row_converter(DataFormat.GSM8K))


def test_load_examples_converts_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "test.jsonl", [GSM8K, GSM8K | {"answer": "#### 7"}])
    examples = load_examples(str(path), convert=row_converter("gsm8k"))
    assert [e.answer for e in examples] == ["1234", "7"]
    assert [e.index for e in examples] == [1, 2]


# ---- files ----

def test_convert_file_writes_rows_that_load_as_paecs_own(tmp_path: Path) -> None:
    source = write(tmp_path / "aime.jsonl", [AIME, AIME | {"answer": 5, "id": 61}])
    out = tmp_path / "ours.jsonl"
    done = convert_file(source, out, "aime")
    assert (done.rows, done.duplicates) == (2, 0)
    assert [e.answer for e in load_jsonl(out)] == ["376", "5"]
    assert [e.item["id"] for e in load_jsonl(out)] == [60, 61]


def test_convert_file_with_unique_leaves_out_repeated_rows(tmp_path: Path) -> None:
    second = DAPO | {"reward_model": {"ground_truth": "12"}}
    source = write(tmp_path / "dapo.jsonl", [DAPO, DAPO, second, DAPO, second])
    out = tmp_path / "ours.jsonl"
    done = convert_file(source, out, DataFormat.DAPO, unique=True)
    assert (done.rows, done.duplicates) == (2, 3)
    assert [e.answer for e in load_jsonl(out)] == ["11", "12"]
    assert convert_file(source, out, DataFormat.DAPO).rows == 5


def test_a_bad_file_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    source = write(tmp_path / "gsm8k.jsonl", [GSM8K, {"question": "q", "answer": "4"}])
    out = tmp_path / "ours.jsonl"
    out.write_text("before\n")
    with pytest.raises(DatasetError, match=r"line 2: answer: has no '#### <final answer>'"):
        convert_file(source, out, DataFormat.GSM8K)
    assert out.read_text() == "before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gsm8k.jsonl", "ours.jsonl"]
