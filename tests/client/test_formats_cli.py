"""`paec files convert` (no server: the API's URL points at a closed port) and `paec files
upload --format` against the real API over HTTP: public layouts become paec's rows on this
machine, a bad row is reported with its line and field before anything is uploaded, and the
server itself still accepts paec's format only. The fixtures are written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.cli import main
from paec.data import load_jsonl, load_jsonl_bytes
from paec.formats import DAPO_PROMPT_TEMPLATE
from tests.client.conftest import Paec, Run
from tests.service import free_port

GSM8K = [{"question": "Ann has 1,500 stamps and buys 25 more. How many now?",
          "answer": "1,500 + 25 = 1,525\n#### 1,525"},
         {"question": "What is 9 times 8?", "answer": "9 * 8 = 72\n#### 72"}]
BAD_GSM8K = [GSM8K[0], {"question": "What is 2 + 2?", "answer": "four"}, GSM8K[1],
             {"answer": "#### 3"}]
DAPO = {"data_source": "math_dapo", "ability": "MATH",
        "prompt": [{"role": "user", "content": DAPO_PROMPT_TEMPLATE.replace(
            "{problem}", "How many primes are below 10?")}],
        "reward_model": {"ground_truth": "4", "style": "rule-lighteval/MATH_v2"}}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def offline(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process with the API's URL on a port nobody listens on."""
    monkeypatch.setenv("PAEC_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PAEC_API_KEY", "sk-unused")

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


# ---- convert (no server) ----

def test_convert_writes_paecs_rows_to_the_output_file(offline: Paec, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    run = offline("files", "convert", str(write(tmp_path / "gsm8k.jsonl", GSM8K)),
                  "--format", "gsm8k", "-o", str(out))
    assert run.code == 0, run.err
    assert run.out.strip() == f"wrote 2 rows of paec's format to {out}"
    examples = load_jsonl(out)  # paec's own format: no conversion needed to read it
    assert [e.answer for e in examples] == ["1525", "72"]
    assert examples[1].messages[0]["content"].startswith("What is 9 times 8?\n\n")
    assert "\\boxed{}" in examples[1].messages[0]["content"]


def test_convert_without_output_prints_the_rows_and_the_summary_on_stderr(
        offline: Paec, tmp_path: Path) -> None:
    run = offline("files", "convert", str(write(tmp_path / "aime.jsonl", [
        {"problem": "Find 10 + 23.", "answer": "033"}])), "--format", "aime")
    assert run.code == 0, run.err
    assert [e.answer for e in load_jsonl(run.out.splitlines())] == ["33"]
    assert "wrote 1 rows of paec's format to stdout" in run.err


def test_convert_json_unique_and_a_prompt_template(offline: Paec, tmp_path: Path) -> None:
    source = write(tmp_path / "dapo.jsonl", [DAPO, DAPO, DAPO | {
        "reward_model": {"ground_truth": "5"}}, DAPO])
    out = tmp_path / "ours.jsonl"
    run = offline("files", "convert", str(source), "--format", "dapo", "-o", str(out),
                  "--unique", "--prompt-template", "Q: {problem}\nPut the answer in \\boxed{}.",
                  "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out) == {"path": str(out), "format": "dapo", "rows": 2,
                                   "duplicates": 2}
    examples = load_jsonl(out)
    assert [e.answer for e in examples] == ["4", "5"]
    assert examples[0].messages == [{"role": "user", "content": "Q: How many primes are "
                                     "below 10?\nPut the answer in \\boxed{}."}]


def test_convert_reports_every_bad_row_and_writes_nothing(offline: Paec, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    run = offline("files", "convert", str(write(tmp_path / "gsm8k.jsonl", BAD_GSM8K)),
                  "--format", "gsm8k", "-o", str(out))
    assert run.code == 1
    assert "is not a valid gsm8k file" in run.err
    assert "line 2: answer: has no '#### <final answer>' line" in run.err
    assert "line 4: question: is required" in run.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gsm8k.jsonl"]


def test_convert_refuses_an_unknown_format_and_a_missing_file(offline: Paec,
                                                              tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        offline("files", "convert", str(write(tmp_path / "a.jsonl", GSM8K)), "--format", "gsm9k")
    assert info.value.code == 2
    missing = offline("files", "convert", str(tmp_path / "nope.jsonl"), "--format", "math")
    assert missing.code == 1 and "no file" in missing.err
    template = offline("files", "convert", str(tmp_path / "a.jsonl"), "--format", "gsm8k",
                       "--prompt-template", "Solve it.")
    assert template.code == 1 and "must contain {problem}" in template.err


# ---- upload --format (the real API) ----

def test_upload_with_a_format_sends_paecs_rows(paec: Paec, http: httpx.Client,
                                               tmp_path: Path) -> None:
    source = write(tmp_path / "gsm8k-train.jsonl", GSM8K)
    run = paec("files", "upload", str(source), "--format", "gsm8k", "--json")
    assert run.code == 0, run.err
    obj = json.loads(run.out)
    assert (obj["filename"], obj["status"], obj["rows"]) == ("gsm8k-train.jsonl", "processed", 2)
    content = http.get(f"/v1/files/{obj['id']}/content")
    assert content.status_code == 200
    assert [e.answer for e in load_jsonl_bytes(content.content)] == ["1525", "72"]
    assert source.read_text().count("####") == 2  # the user's file is left as it was


def test_upload_with_a_bad_row_names_it_and_uploads_nothing(paec: Paec, tmp_path: Path) -> None:
    run = paec("files", "upload", str(write(tmp_path / "gsm8k.jsonl", BAD_GSM8K)),
               "--format", "gsm8k")
    assert run.code == 1
    assert "line 2: answer:" in run.err and "line 4: question:" in run.err
    assert paec("files", "list").out.strip() == "no files"


def test_the_server_still_accepts_only_paecs_format(paec: Paec, tmp_path: Path) -> None:
    run = paec("files", "upload", str(write(tmp_path / "gsm8k.jsonl", GSM8K)))
    assert run.code == 1
    assert "line 1" in run.err and "HTTP 400" in run.err
    assert paec("files", "list").out.strip() == "no files"
