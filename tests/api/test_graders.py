"""/v1/fine_tuning/alpha/graders/{validate,run} over real HTTP with the official client.

A grader that fails on a sample (bad template variable, a python grader that raises or
loops) is a 200 with reward 0 and its flag set; an invalid grader is a 400 naming the field.
The server grades in a worker thread, so math_verify passing here proves the child-process
path (math-verify's own timeouts raise outside a main thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from api.app import create_app
from store.errors import InvalidRequestError
from store.grading import validate_grader_spec
from store.settings import Settings
from tests.service import REDIS_TEST_URL, ThreadedServer


def run(client: OpenAI, grader: dict[str, Any], sample: str,
        item: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw RunGraderResponse JSON (aliases and extra keys as the server sent them)."""
    response = client.fine_tuning.alpha.graders.with_raw_response.run(
        grader=grader, model_sample=sample, item=item if item is not None else {})
    body: dict[str, Any] = response.http_response.json()
    return body


def string_check(operation: str) -> dict[str, Any]:
    return {"type": "string_check", "name": "check", "operation": operation,
            "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}


PYTHON_EXACT = {"type": "python", "name": "exact", "source":
                "def grade(sample, item):\n"
                "    return 1.0 if sample['output_text'].strip() == item['answer'] else 0.0\n"}


@pytest.mark.parametrize(("operation", "sample", "reward"), [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0),
    ("ne", "Paris", 0.0), ("ne", "Lyon", 1.0),
    ("like", "It is Paris.", 1.0), ("like", "It is paris.", 0.0),
    ("ilike", "IT IS PARIS.", 1.0), ("ilike", "Lyon", 0.0),
])
def test_string_check_operations(openai_client: OpenAI, operation: str, sample: str,
                                 reward: float) -> None:
    result = openai_client.fine_tuning.alpha.graders.run(
        grader=string_check(operation), model_sample=sample,
        item={"answer": "Paris"})
    assert result.reward == reward
    assert result.metadata.type == "string_check" and result.metadata.name == "check"
    assert not any(result.metadata.errors.model_dump().values())


def test_run_response_has_every_openai_error_key(openai_client: OpenAI) -> None:
    body = run(openai_client, string_check("eq"), "x", {"answer": "x"})
    assert set(body) >= {"reward", "sub_rewards", "model_grader_token_usage_per_model",
                         "metadata"}
    assert body["model_grader_token_usage_per_model"] == {}
    assert set(body["metadata"]["errors"]) >= {
        "formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
        "model_grader_refusal_error", "model_grader_server_error",
        "model_grader_server_error_details", "other_error", "python_grader_runtime_error",
        "python_grader_runtime_error_details", "python_grader_server_error",
        "python_grader_server_error_type", "sample_parse_error", "truncated_observation_error",
        "unresponsive_reward_error"}
    assert body["metadata"]["token_usage"] is None
    assert body["metadata"]["execution_time"] >= 0.0


def test_text_similarity_fuzzy_match(openai_client: OpenAI) -> None:
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": "fuzzy_match",
              "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
    result = openai_client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="hallo", item={"answer": "hello"})
    assert result.reward == pytest.approx(0.8)  # 2 * LCS("hallo", "hello") / 10


def test_multi_grader_combines_sub_rewards_with_its_formula(openai_client: OpenAI) -> None:
    grader = {"type": "multi", "name": "combo", "calculate_output": "0.25 * exact + 0.75 * sim",
              "graders": {"exact": string_check("eq"),
                          "sim": {"type": "text_similarity", "name": "sim",
                                  "evaluation_metric": "fuzzy_match",
                                  "input": "{{ sample.output_text }}",
                                  "reference": "{{ item.answer }}"}}}
    body = run(openai_client, grader, "hallo", {"answer": "hello"})
    assert body["sub_rewards"] == pytest.approx({"exact": 0.0, "sim": 0.8})
    assert body["reward"] == pytest.approx(0.6)
    assert body["metadata"]["type"] == "multi"


def test_math_verify_grades_in_the_server_thread(openai_client: OpenAI) -> None:
    grader = {"type": "math_verify", "name": "math", "input": "{{ sample.output_text }}",
              "reference": "{{ item.answer }}"}
    right = run(openai_client, grader, r"So the result is \boxed{\frac{1}{2}}.",
                {"answer": "0.5"})
    wrong = run(openai_client, grader, r"So the result is \boxed{3}.", {"answer": "0.5"})
    assert (right["reward"], wrong["reward"]) == (1.0, 0.0)
    assert not any(v for k, v in right["metadata"]["errors"].items() if k.endswith("_error"))


def test_python_grader_runs_when_allowed(openai_client: OpenAI) -> None:
    assert run(openai_client, PYTHON_EXACT, " 42 ", {"answer": "42"})["reward"] == 1.0
    assert run(openai_client, PYTHON_EXACT, "41", {"answer": "42"})["reward"] == 0.0


def test_python_grader_that_raises_is_reward_0_with_the_runtime_flag(
        openai_client: OpenAI) -> None:
    grader = {"type": "python", "name": "boom",
              "source": "def grade(sample, item):\n    raise KeyError('no answer here')\n"}
    result = openai_client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="x", item={})
    assert result.reward == 0.0
    assert result.metadata.errors.python_grader_runtime_error is True
    assert "no answer here" in (result.metadata.errors.python_grader_runtime_error_details or "")


@pytest.mark.slow
def test_python_grader_that_loops_is_reward_0_with_the_timeout_flags(
        openai_client: OpenAI) -> None:
    grader = {"type": "python", "name": "loop",
              "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    body = run(openai_client, grader, "x")
    assert body["reward"] == 0.0
    errors = body["metadata"]["errors"]
    assert (errors["unresponsive_reward_error"], errors["timeout_error"]) == (True, True)


def test_missing_item_variable_is_reward_0_with_invalid_variable_flag(
        openai_client: OpenAI) -> None:
    body = run(openai_client, string_check("eq"), "Paris", {"label": "Paris"})
    assert body["reward"] == 0.0
    assert body["metadata"]["errors"]["invalid_variable_error"] is True
    assert "answer" in body["metadata"]["error_details"]


def test_sample_that_is_not_json_is_reward_0_with_sample_parse_flag(
        openai_client: OpenAI) -> None:
    grader = {**string_check("eq"), "input": "{{ sample.output_json.answer }}"}
    body = run(openai_client, grader, "not json", {"answer": "x"})
    assert body["reward"] == 0.0
    assert body["metadata"]["errors"]["sample_parse_error"] is True


# ---- validate ----

def test_validate_echoes_a_valid_grader(openai_client: OpenAI) -> None:
    grader = {"type": "multi", "name": "combo", "calculate_output": "a",
              "graders": {"a": string_check("ilike")}}
    response = openai_client.fine_tuning.alpha.graders.with_raw_response.validate(
        grader=grader)
    assert response.http_response.json() == {"grader": grader}


def test_validate_accepts_multi_with_a_single_grader_as_newer_sdks_send_it(
        openai_client: OpenAI) -> None:
    grader = {"type": "multi", "name": "combo", "calculate_output": "check * 2",
              "graders": string_check("eq")}
    validated = openai_client.fine_tuning.alpha.graders.validate(grader=grader)
    assert validated.grader is not None and validated.grader.type == "multi"
    assert run(openai_client, grader, "a", {"answer": "a"})["reward"] == 2.0


@pytest.mark.parametrize(("grader", "param"), [
    ({**string_check("equals")}, "grader.operation"),
    ({"type": "score_model", "name": "s", "model": "gpt-4o", "input": []}, "grader.type"),
    ({"type": "string_check", "name": "c", "input": "{{ sample.output_text }}",
      "operation": "eq"}, "grader.reference"),
    ({**string_check("eq"), "input": "{{ answer }}"}, "grader.input"),
    ({"type": "text_similarity", "name": "t", "evaluation_metric": "bleu",
      "input": "a", "reference": "b"}, "grader.evaluation_metric"),
    ({"type": "multi", "name": "m", "calculate_output": "a + nope",
      "graders": {"a": string_check("eq")}}, "grader.calculate_output"),
    ({"type": "multi", "name": "m", "calculate_output": "a",
      "graders": {"a": {**string_check("eq"), "operation": "x"}}},
     "grader.graders.a.operation"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item:\n"}, "grader.source"),
    ({"type": "python", "name": "p", "source": "x = 1\n"}, "grader.source"),
])
def test_invalid_grader_is_400_naming_the_field(openai_client: OpenAI, grader: dict[str, Any],
                                                param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.fine_tuning.alpha.graders.validate(grader=grader)
    assert (caught.value.code, caught.value.param) == ("invalid_request", param)


def test_run_with_an_invalid_grader_is_400(openai_client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.fine_tuning.alpha.graders.run(
            grader=string_check("equals"), model_sample="x")
    assert caught.value.param == "grader.operation"


def test_run_without_model_sample_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/fine_tuning/alpha/graders/run", json={"grader": string_check("eq")})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model_sample"


def test_graders_need_a_key(server: str) -> None:
    r = httpx.post(server + "/v1/fine_tuning/alpha/graders/validate",
                   json={"grader": string_check("eq")})
    assert r.status_code == 401


@pytest.mark.parametrize(("grader", "allow_python", "param"), [
    ({**string_check("eq"), "operation": "x"}, True, "method.reinforcement.grader.operation"),
    ({"type": "python", "name": "p", "source": "x = 1\n"}, True,
     "method.reinforcement.grader.source"),
    (PYTHON_EXACT, False, "method.reinforcement.grader.type"),
    ("not an object", True, "method.reinforcement.grader"),
])
def test_validate_grader_spec_names_fields_under_the_callers_prefix(
        grader: object, allow_python: bool, param: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, allow_python_graders=allow_python)
    with pytest.raises(InvalidRequestError) as caught:
        validate_grader_spec(grader, settings, "method.reinforcement.grader")
    assert caught.value.param == param
    assert caught.value.message.startswith(param)


def test_validate_grader_spec_returns_a_plain_copy(tmp_path: Path) -> None:
    grader = string_check("eq")
    stored = validate_grader_spec(grader, Settings(data_dir=tmp_path))
    assert stored == grader and stored is not grader


# ---- python graders switched off ----

@pytest.fixture(scope="module")
def no_python_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("no-python")
    settings = Settings(data_dir=data, database_url=pg_url, broker_url=REDIS_TEST_URL,
                        allow_python_graders=False)
    with ThreadedServer(create_app(settings)) as running:
        yield running.url


@pytest.mark.parametrize(("grader", "param"), [
    (PYTHON_EXACT, "grader.type"),
    ({"type": "multi", "name": "m", "calculate_output": "0.5 * p + 0.5 * s",
      "graders": {"s": string_check("eq"), "p": PYTHON_EXACT}}, "grader.graders.p.type"),
])
def test_python_grader_is_400_when_disabled(no_python_server: str, api_key: str,
                                            grader: dict[str, Any], param: str) -> None:
    client = OpenAI(base_url=no_python_server + "/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=grader)
    assert caught.value.param == param
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.alpha.graders.run(grader=grader, model_sample="42")


def test_other_graders_still_run_when_python_is_disabled(no_python_server: str,
                                                         api_key: str) -> None:
    client = OpenAI(base_url=no_python_server + "/v1", api_key=api_key, max_retries=0)
    result = client.fine_tuning.alpha.graders.run(
        grader=string_check("eq"), model_sample="a", item={"answer": "a"})
    assert result.reward == 1.0
