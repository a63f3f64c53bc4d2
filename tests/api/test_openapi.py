"""/openapi.json describes every body the API reads and writes (api/schemas, api/openapi.py),
and a request that fails its typed model names the field as the service's own errors do
(api/errors.py). Built from the app, without a server; the live server is fuzzed against this
document in test_fuzz.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from api.app import create_app
from api.errors import param_of
from api.schemas.evaluations import CreateEvaluationRequest
from api.schemas.graders import RunGraderRequest, ValidateGraderRequest
from api.schemas.jobs import EXAMPLE_REQUEST, CreateFineTuningJobRequest
from store.settings import Settings

BODY_METHODS = ("post", "put", "patch")


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app: FastAPI = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    return app.openapi()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def component(schema: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    return found


def test_every_success_response_has_a_schema(schema: dict[str, Any]) -> None:
    missing = [f"{method.upper()} {path} {status} {media}"
               for path, method, operation in operations(schema)
               for status, response in operation["responses"].items() if status[0] == "2"
               for media, content in response.get("content", {}).items()
               if not content.get("schema")]
    assert missing == []


def test_every_body_a_route_reads_is_declared(schema: dict[str, Any]) -> None:
    # Body-less POSTs (cancel, pause, resume) accept an empty body; every other one declares it.
    bodiless = ("/cancel", "/pause", "/resume")
    undeclared = [f"{method.upper()} {path}" for path, method, operation in operations(schema)
                  if method in BODY_METHODS and not path.endswith(bodiless)
                  and "requestBody" not in operation]
    assert undeclared == []


def test_json_bodies_are_typed_objects(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            body = component(schema, content["application/json"]["schema"])
            assert body["type"] == "object" and body["properties"], (method, path)


def test_the_upload_is_a_multipart_form_with_its_fields(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/v1/files"]["post"]["requestBody"]
    form = component(schema, body["content"]["multipart/form-data"]["schema"])
    assert form["required"] == ["file", "purpose"]
    assert set(form["properties"]) == {"file", "purpose", "expires_after[anchor]",
                                       "expires_after[seconds]"}
    assert form["properties"]["file"]["contentMediaType"] == "application/octet-stream"


def test_the_stream_is_an_event_stream_of_described_events(schema: dict[str, Any]) -> None:
    ok = schema["paths"]["/api/jobs/{job_id}/stream"]["get"]["responses"]["200"]
    event = ok["content"]["text/event-stream"]["schema"]
    assert set(event["properties"]) == {"event", "id", "data", "retry"}
    assert "StreamEnd" in schema["components"]["schemas"]


def test_downloads_are_binary_with_their_range_answers(schema: dict[str, Any]) -> None:
    download = schema["paths"]["/api/checkpoints/{checkpoint_id}/download"]["get"]
    assert {"200", "206", "304", "416"} <= set(download["responses"])
    assert "application/x-tar" in download["responses"]["206"]["content"]
    content = schema["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]
    assert list(content["content"]) == ["application/octet-stream"]


def test_every_error_is_the_envelope_and_no_422_is_documented(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        bad = responses["400"]["content"]["application/json"]["schema"]
        assert bad == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_parameters_are_never_null(schema: dict[str, Any]) -> None:
    nullable = [f"{method.upper()} {path} {parameter['name']}"
                for path, method, operation in operations(schema)
                for parameter in operation.get("parameters", [])
                if {"type": "null"} in parameter["schema"].get("anyOf", [])]
    assert nullable == []


def test_the_examples_are_valid_requests(schema: dict[str, Any]) -> None:
    for model in (CreateFineTuningJobRequest, CreateEvaluationRequest, ValidateGraderRequest,
                  RunGraderRequest):
        examples = schema["components"]["schemas"][model.__name__]["examples"]
        for example in examples:
            model.model_validate(example)
    assert CreateFineTuningJobRequest.model_validate(EXAMPLE_REQUEST).spec().training_file


@pytest.mark.parametrize(("loc", "param"), [
    (("body", "method", "reinforcement", "grader"), "method.reinforcement.grader"),
    (("body", "datasets", 1), "datasets.1"),
    (("body", "metadata", "k" * 65, "[key]"), "metadata"),
    (("body", "expires_after[seconds]"), "expires_after.seconds"),
    (("query", "limit"), "limit"),
    (("header", "Idempotency-Key"), "Idempotency-Key"),
    (("body",), "body"),
])
def test_a_validation_error_names_the_field_as_the_service_does(loc: tuple[Any, ...],
                                                                param: str) -> None:
    assert param_of(loc) == param


def test_the_hyperparameters_list_trainconfig_fields_and_refuse_others(
        schema: dict[str, Any]) -> None:
    hyper = schema["components"]["schemas"]["Hyperparameters"]
    assert hyper["additionalProperties"] is False
    assert {"batch_size", "n_epochs", "device", "group_size", "paec"} <= set(hyper["properties"])
    assert hyper["properties"]["paec"]["additionalProperties"] is False


def test_the_schema_is_written_once(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    assert app.openapi() is app.openapi()
