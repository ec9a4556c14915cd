"""`GET /openapi.json`: every served route is listed, with the schemas the handlers really use."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from kodo.api import create_app
from kodo.intent.requests import Intent
from kodo.runtime import Runtime

ROUTE_ARG = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


@pytest.fixture
def app(rt: Runtime) -> Flask:
    return create_app(runtime=rt)


@pytest.fixture
def doc(app: Flask) -> dict[str, Any]:
    r = app.test_client().get("/openapi.json")
    assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")
    document: dict[str, Any] = r.get_json()
    return document


def _served(app: Flask) -> set[tuple[str, str]]:
    return {
        (method.lower(), ROUTE_ARG.sub(r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def _ref(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = doc["components"]["schemas"][name]
    return resolved


def test_document_lists_exactly_the_served_routes(app: Flask, doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "kodo"
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _served(app)
    # Every route has its own description (none fell back to the bare listing).
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "summary" in op, f"{method.upper()} {path} has no @operation (kodo.api.openapi)"


def test_contract_routes_are_present(doc: dict[str, Any]) -> None:
    expected = {
        ("get", "/healthz"),
        ("post", "/intents"),
        ("post", "/intents/{intent_id}/run"),
        ("get", "/runs/{run_id}"),
        ("post", "/runs/{run_id}/approve-plan"),
        ("post", "/runs/{run_id}/events"),
        ("post", "/runs/{run_id}/retry"),
        ("post", "/crashdemo"),
        ("get", "/marks"),
        ("post", "/api/intents"),
        ("post", "/api/runs"),
        ("get", "/api/runs/{workflow_id}"),
        ("get", "/api/runs/{workflow_id}/steps"),
        ("post", "/api/runs/{workflow_id}/approve-plan"),
        ("get", "/api/artifacts/{artifact_id}"),
        ("get", "/openapi.json"),
    }
    assert expected <= {(m, p) for p, ops in doc["paths"].items() for m in ops}


@pytest.mark.parametrize(
    ("method", "path", "body", "ok_status", "ok_schema"),
    [
        ("post", "/intents", "Intent", "201", "IntentCreated"),
        ("post", "/api/intents", "Intent", "201", "IntentCreated"),
        ("post", "/intents/{intent_id}/run", "RunRequest", "202", "RunStarted"),
        ("post", "/api/runs", "StartRunRequest", "202", "RunHeader"),
        ("post", "/runs/{run_id}/approve-plan", "PlanApprovalRequest", "202", "ApprovalAccepted"),
        ("post", "/api/runs/{workflow_id}/approve-plan", "PlanApprovalRequest", "202", "ApprovalAccepted"),
        ("post", "/runs/{run_id}/events", "RunEvent", "202", "Accepted"),
        ("post", "/runs/{run_id}/retry", None, "202", "RetryAccepted"),
        ("get", "/runs/{run_id}", None, "200", "RunView"),
        ("get", "/api/runs/{workflow_id}", None, "200", "RunHeader"),
    ],
)
def test_operation_schemas(
    doc: dict[str, Any], method: str, path: str, body: str | None, ok_status: str, ok_schema: str
) -> None:
    op = doc["paths"][path][method]
    if body is None:
        assert "requestBody" not in op
    else:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        if body in ("RunRequest", "StartRunRequest"):  # and the queue policy's constraints
            assert schema["allOf"][1]["title"] == "QueuePolicy"
            schema = schema["allOf"][0]
        assert schema == {"$ref": f"#/components/schemas/{body}"}
    assert op["responses"][ok_status]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{ok_schema}"
    }
    for status, response in op["responses"].items():
        if int(status) >= 400:
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }


def test_path_parameters_are_declared(doc: dict[str, Any]) -> None:
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, path


def test_request_schemas_are_the_validators_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    intent = schemas["Intent"]
    assert intent["additionalProperties"] is False
    assert sorted(intent["required"]) == ["constraints", "goal", "inputs"]
    assert intent["properties"]["goal"] == Intent.model_json_schema()["properties"]["goal"]
    run_request = schemas["RunRequest"]
    assert run_request["additionalProperties"] is False
    assert {"traceId", "queueName", "deduplicationID", "timeoutMS", "queuePartitionKey"} <= set(
        run_request["properties"]
    )
    start = schemas["StartRunRequest"]
    assert start["additionalProperties"] is False
    assert set(start["properties"]) == set(run_request["properties"]) | {"intentId"}
    assert start["required"] == ["intentId"]
    assert schemas["PlanApprovalRequest"]["required"] == ["approvedBy"]
    assert sorted(schemas["RunEvent"]["required"]) == ["payload", "type"]


def test_response_schemas_follow_the_projections(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    header = schemas["RunHeader"]
    assert list(header["properties"]) == [
        "workflowID",
        "status",
        "workflowName",
        "createdAt",
        "updatedAt",
        "error",
        "traceId",
        "spanId",
        "nextAction",
        "lastStep",
        "traceBaseUrl",
    ]
    assert "error" not in header["required"] and "traceBaseUrl" not in header["required"]
    assert header["properties"]["status"]["enum"] == [
        "ENQUEUED",
        "PENDING",
        "WAITING_INPUT",
        "SUCCESS",
        "ERROR",
        "CANCELLED",
    ]
    view = schemas["RunView"]
    assert set(view["properties"]) - set(view["required"]) == {"error", "nextAction"}
    steps = doc["paths"]["/api/runs/{workflow_id}/steps"]["get"]["responses"]["200"]["content"]
    assert steps["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/StepRow"},
    }
    assert set(schemas["StepRow"]["properties"]) - set(schemas["StepRow"]["required"]) == {"endedAt", "error"}
    assert all(
        schemas[n]["additionalProperties"] is False
        for n in ("RunView", "RunHeader", "StepRow", "ArtifactRef")
    )


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref["$ref"].startswith("#/components/schemas/")
        _ref(doc, ref)


def test_artifact_content_types(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/api/artifacts/{artifact_id}"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/plain", "image/svg+xml"}


def test_every_error_response_is_an_error_body_and_parameters_say_no_nul(doc: dict[str, Any]) -> None:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.isdigit() and int(status) >= 400:
                    assert response["content"] == {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    }, (method, path, status)
            for param in op.get("parameters", []):
                if param["schema"].get("type") == "string" and "enum" not in param["schema"]:  # no NUL
                    assert re.search(param["schema"]["pattern"], "a\x00b") is None, (method, path, param)
            if op.get("parameters") or "requestBody" in op:
                assert "400" in op["responses"], (method, path)


def test_the_document_says_what_the_validators_require(doc: dict[str, Any]) -> None:
    """The findings of the first schemathesis run: required query values and bodies are marked."""
    marks = doc["paths"]["/marks"]["get"]["parameters"]
    assert [(p["name"], p["required"]) for p in marks] == [("wf", True)]
    assert marks[0]["schema"]["minLength"] == 1 and "\\s" in marks[0]["schema"]["pattern"]
    assert doc["paths"]["/api/runs"]["post"]["requestBody"]["required"] is True
    # Under the partition law (the default), an empty body ({}) fails the queue policy: required.
    assert doc["paths"]["/intents/{intent_id}/run"]["post"]["requestBody"]["required"] is True
    policy = doc["paths"]["/api/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "allOf"
    ][1]
    assert policy["required"] == ["queuePartitionKey"]
    assert {b["properties"]["recipeName"]["enum"][0] for b in policy["anyOf"]} == {
        "compile-default",
        "sandbox-default",
        "control-default",
    }
    slow = {p["name"]: p for p in doc["paths"]["/slowstep"]["post"]["parameters"]}
    assert slow["sleep"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 86400000, "default": 5000}
    assert not slow["sleep"]["required"]
