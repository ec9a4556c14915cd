"""Strict request schemas (§3.1-3.4), the 400 V envelope (§1.3) and body parsing (§1.2).

The models are the intent layer's (`kodo.intent.requests`); parsing and validation raise kodo errors,
and every expected status and body is checked through `kodo.api.errors.to_http`, the one mapping.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from kodo.api.errors import to_http
from kodo.api.schemas import parse_json_body, validate
from kodo.errors import KodoError, SchemaError, ValidationError
from kodo.intent.requests import NON_BLANK_TEXT_PATTERN, Intent, PlanApprovalRequest, RunEvent, RunRequest

SCHEMAS: dict[str, type[BaseModel]] = {
    "Intent": Intent,
    "RunRequest": RunRequest,
    "RunEvent": RunEvent,
    "PlanApprovalRequest": PlanApprovalRequest,
}

MINIMAL: dict[str, dict[str, Any]] = {
    "Intent": {"goal": "g", "inputs": {}, "constraints": {}},
    "RunRequest": {},
    "RunEvent": {"type": "t", "payload": {}},  # a blank type is refused (issue 8)
    "PlanApprovalRequest": {"approvedBy": "a"},
}

FULL_RUN_REQUEST: dict[str, Any] = {
    "traceId": "t-1",
    "queueName": "intentQ",
    "priority": 5,
    "deduplicationID": "d-1",
    "timeoutMS": 60000,
    "recipeName": "compile-default",
    "recipeVersion": 2,
    "workload": {"concurrency": 1, "steps": 0, "sandboxMinutes": 3},
    "tenantId": "tenant",
    "taskKey": "task",
    "queuePartitionKey": "p1",
}

FULL: dict[str, dict[str, Any]] = {
    "Intent": {"goal": " ", "inputs": {"a": [1, {"b": None}]}, "constraints": {"x": 1}, "connectors": ["c"]},
    "RunRequest": FULL_RUN_REQUEST,
    "RunEvent": {"type": "approve", "payload": {"k": "v"}},
    "PlanApprovalRequest": {"approvedBy": "alice", "notes": "ok"},
}

REQUIRED: list[tuple[str, str]] = [
    ("Intent", "goal"),
    ("Intent", "inputs"),
    ("Intent", "constraints"),
    ("RunEvent", "type"),
    ("RunEvent", "payload"),
    ("PlanApprovalRequest", "approvedBy"),
]

NULLABLE: list[tuple[str, str]] = [("Intent", "connectors"), ("PlanApprovalRequest", "notes")] + [
    ("RunRequest", key) for key in FULL_RUN_REQUEST
]

INTEGER_FIELDS: list[tuple[str, str]] = [
    ("RunRequest", "priority"),
    ("RunRequest", "timeoutMS"),
    ("RunRequest", "recipeVersion"),
]


class Http(NamedTuple):
    """An error as the API answers it."""

    status: int
    body: dict[str, Any]


def _http(exc: KodoError) -> Http:
    return Http(*to_http(exc))


def _reject(name: str, data: object) -> Http:
    with pytest.raises(SchemaError) as info:
        validate(SCHEMAS[name], data, name)
    err = _http(info.value)
    assert err.status == 400
    assert err.body["error"].startswith(f"invalid {name}: ")
    assert isinstance(err.body["details"], list)
    assert err.body["details"]
    for item in err.body["details"]:
        assert set(item) == {"instancePath", "schemaPath", "keyword", "params", "message"}
    json.dumps(err.body)  # the body must be serialisable as-is
    return err


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("bodies", [MINIMAL, FULL], ids=["minimal", "full"])
def test_valid_bodies_parse(name: str, bodies: dict[str, dict[str, Any]]) -> None:
    model = validate(SCHEMAS[name], bodies[name], name)
    assert isinstance(model, SCHEMAS[name])
    assert model.model_dump(by_alias=True, exclude_unset=True) == bodies[name]


def test_full_run_request_fields() -> None:
    rr = validate(RunRequest, FULL_RUN_REQUEST, "RunRequest")
    assert rr.queue_name == "intentQ"
    assert rr.workload is not None
    assert rr.workload.sandbox_minutes == 3
    assert (rr.priority, rr.timeout_ms, rr.recipe_version) == (5, 60000, 2)
    assert rr.queue_partition_key == "p1"


@pytest.mark.parametrize(("name", "field"), REQUIRED)
def test_each_required_field_missing(name: str, field: str) -> None:
    body = dict(FULL[name])
    del body[field]
    err = _reject(name, body)
    assert err.body["error"] == f"invalid {name}: data must have required property '{field}'"
    assert err.body["details"] == [
        {
            "instancePath": "",
            "schemaPath": "#/required",
            "keyword": "required",
            "params": {"missingProperty": field},
            "message": f"must have required property '{field}'",
        }
    ]


@pytest.mark.parametrize("field", ["concurrency", "steps", "sandboxMinutes"])
def test_workload_fields_required(field: str) -> None:
    workload = dict(FULL_RUN_REQUEST["workload"])
    del workload[field]
    err = _reject("RunRequest", {"workload": workload})
    assert err.body["error"] == f"invalid RunRequest: data/workload must have required property '{field}'"


@pytest.mark.parametrize("name", SCHEMAS)
def test_unknown_key_rejected(name: str) -> None:
    err = _reject(name, {**FULL[name], "bogus": 1})
    assert err.body["error"] == f"invalid {name}: data must NOT have additional properties"
    assert err.body["details"][0]["keyword"] == "additionalProperties"
    assert err.body["details"][0]["params"] == {"additionalProperty": "bogus"}


def test_unknown_key_in_nested_workload_rejected() -> None:
    err = _reject("RunRequest", {"workload": {**FULL_RUN_REQUEST["workload"], "extra": 0}})
    assert err.body["error"] == "invalid RunRequest: data/workload must NOT have additional properties"


def test_snake_case_names_are_unknown_keys() -> None:
    err = _reject("PlanApprovalRequest", {"approved_by": "a"})
    assert "additionalProperty" in json.dumps(err.body["details"])


@pytest.mark.parametrize(("name", "field"), INTEGER_FIELDS)
@pytest.mark.parametrize("bad", [1.5, True, False, "1", 2.0])
def test_integer_fields_are_strict(name: str, field: str, bad: object) -> None:
    err = _reject(name, {field: bad})
    assert err.body["error"] == f"invalid {name}: data/{field} must be integer"
    assert err.body["details"][0]["params"] == {"type": "integer"}


@pytest.mark.parametrize("field", ["concurrency", "steps", "sandboxMinutes"])
@pytest.mark.parametrize("bad", [1.5, True])
def test_workload_integers_are_strict(field: str, bad: object) -> None:
    err = _reject("RunRequest", {"workload": {**FULL_RUN_REQUEST["workload"], field: bad}})
    assert err.body["error"] == f"invalid RunRequest: data/workload/{field} must be integer"


def test_workload_minimum_zero() -> None:
    assert validate(
        RunRequest, {"workload": {"concurrency": 0, "steps": 0, "sandboxMinutes": 0}}, "RunRequest"
    )
    err = _reject("RunRequest", {"workload": {"concurrency": -1, "steps": 0, "sandboxMinutes": 0}})
    assert err.body["error"] == "invalid RunRequest: data/workload/concurrency must be >= 0"
    assert err.body["details"][0]["keyword"] == "minimum"


def test_queue_name_enum() -> None:
    for q in ("compileQ", "sbxQ", "controlQ", "intentQ"):
        assert validate(RunRequest, {"queueName": q}, "RunRequest").queue_name == q
    err = _reject("RunRequest", {"queueName": "otherQ"})
    assert (
        err.body["error"] == "invalid RunRequest: data/queueName must be equal to one of the allowed values"
    )
    assert err.body["details"][0]["params"] == {"allowedValues": ["compileQ", "sbxQ", "controlQ", "intentQ"]}


@pytest.mark.parametrize(
    ("name", "body", "path"),
    [
        ("Intent", {"goal": "", "inputs": {}, "constraints": {}}, "data/goal"),
        ("RunRequest", {"tenantId": ""}, "data/tenantId"),
        ("RunRequest", {"taskKey": ""}, "data/taskKey"),
        ("RunRequest", {"queuePartitionKey": ""}, "data/queuePartitionKey"),
        ("PlanApprovalRequest", {"approvedBy": ""}, "data/approvedBy"),
    ],
)
def test_min_length(name: str, body: dict[str, Any], path: str) -> None:
    err = _reject(name, body)
    assert err.body["error"] == f"invalid {name}: {path} must NOT have fewer than 1 characters"


def test_whitespace_strings_pass_schema() -> None:
    # Whitespace-only tenantId/taskKey are a queue-policy (400 P) concern, not a schema one.
    assert validate(RunRequest, {"tenantId": " ", "taskKey": " "}, "RunRequest").tenant_id == " "


@pytest.mark.parametrize(
    ("name", "body", "path", "type_name"),
    [
        ("Intent", {"goal": 1, "inputs": {}, "constraints": {}}, "data/goal", "string"),
        ("Intent", {"goal": "g", "inputs": [], "constraints": {}}, "data/inputs", "object"),
        ("Intent", {"goal": "g", "inputs": {}, "constraints": "x"}, "data/constraints", "object"),
        (
            "Intent",
            {"goal": "g", "inputs": {}, "constraints": {}, "connectors": "c"},
            "data/connectors",
            "array",
        ),
        (
            "Intent",
            {"goal": "g", "inputs": {}, "constraints": {}, "connectors": [1]},
            "data/connectors/0",
            "string",
        ),
        ("RunEvent", {"type": None, "payload": {}}, "data/type", "string"),
        ("RunEvent", {"type": "t", "payload": None}, "data/payload", "object"),
        ("RunRequest", {"traceId": 1}, "data/traceId", "string"),
        ("RunRequest", {"workload": []}, "data/workload", "object"),
        ("PlanApprovalRequest", {"approvedBy": "a", "notes": 1}, "data/notes", "string"),
    ],
)
def test_type_errors(name: str, body: dict[str, Any], path: str, type_name: str) -> None:
    err = _reject(name, body)
    assert err.body["error"] == f"invalid {name}: {path} must be {type_name}"
    assert err.body["details"][0]["keyword"] == "type"


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("body", [[], "x", 1, None, True])
def test_non_object_body(name: str, body: object) -> None:
    err = _reject(name, body)
    assert err.body["error"] == f"invalid {name}: data must be object"


@pytest.mark.parametrize(("name", "field"), NULLABLE)
def test_explicit_null_accepted_for_optionals(name: str, field: str) -> None:
    model = validate(SCHEMAS[name], {**MINIMAL[name], field: None}, name)
    assert field in model.model_dump(by_alias=True, exclude_unset=True)


def test_multiple_reasons_joined_and_deterministic() -> None:
    body = {"goal": "", "inputs": 1, "extra": True}
    first = _reject("Intent", body)
    second = _reject("Intent", json.loads(json.dumps(body)))
    assert first.body == second.body
    assert first.body["error"] == (
        "invalid Intent: data/goal must NOT have fewer than 1 characters; data/inputs must be object; "
        "data must have required property 'constraints'; data must NOT have additional properties"
    )


def test_malformed_json() -> None:
    for raw in (b"{", b"{'a':1}", b"nope", b"\xff\xfe", b"NaN", b"{} {}"):
        with pytest.raises(ValidationError) as info:
            parse_json_body(raw)
        assert _http(info.value) == (400, {"error": "invalid json"})


def test_empty_body_is_object_then_intent_fails() -> None:
    body = parse_json_body(b"")
    assert body == {}
    err = _reject("Intent", body)
    assert err.body["error"].startswith("invalid Intent: data must have required property 'goal'")
    assert validate(RunRequest, parse_json_body(b""), "RunRequest") == RunRequest.model_validate({})


def test_whitespace_body() -> None:
    assert parse_json_body(b"  \n\t") == {}
    assert parse_json_body(b"", empty_as_object=False) == {}
    with pytest.raises(ValidationError) as info:
        parse_json_body(b"   ", empty_as_object=False)
    assert _http(info.value).body == {"error": "invalid json"}


def test_valid_json_values() -> None:
    assert parse_json_body(b' {"a": [1, 1.5, null]} ') == {"a": [1, 1.5, None]}
    assert parse_json_body(b"[]") == []
    assert parse_json_body(b'"s"') == "s"


@pytest.mark.parametrize("name", SCHEMAS)
def test_json_schema_is_strict(name: str) -> None:
    schema = SCHEMAS[name].model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["title"] == name
    assert set(schema["properties"]) == set(FULL[name])


# ---- input limits (issue 8, "Bad input") -----------------------------------------------------------

BAD_TEXT = "must not contain NUL or unpaired surrogate characters"


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udc00"])
@pytest.mark.parametrize(
    ("name", "body", "path"),
    [
        ("Intent", {"goal": "{bad}", "inputs": {}, "constraints": {}}, "data/goal"),
        ("Intent", {"goal": "g", "inputs": {"k": ["{bad}"]}, "constraints": {}}, "data/inputs/k/0"),
        (
            "Intent",
            {"goal": "g", "inputs": {}, "constraints": {}, "connectors": ["{bad}"]},
            "data/connectors/0",
        ),
        ("RunRequest", {"traceId": "{bad}"}, "data/traceId"),
        ("RunRequest", {"tenantId": "{bad}"}, "data/tenantId"),
        ("RunRequest", {"queuePartitionKey": "{bad}"}, "data/queuePartitionKey"),
        ("RunRequest", {"deduplicationID": "{bad}"}, "data/deduplicationID"),
        ("RunEvent", {"type": "{bad}", "payload": {}}, "data/type"),
        ("RunEvent", {"type": "t", "payload": {"p": "{bad}"}}, "data/payload/p"),
        ("PlanApprovalRequest", {"approvedBy": "{bad}"}, "data/approvedBy"),
        ("PlanApprovalRequest", {"approvedBy": "a", "notes": "{bad}"}, "data/notes"),
    ],
)
def test_nul_and_lone_surrogates_are_rejected(name: str, body: dict[str, Any], path: str, bad: str) -> None:
    data = json.loads(json.dumps(body).replace("{bad}", json.dumps(bad)[1:-1]))
    err = _reject(name, data)
    assert err.body["error"] == f"invalid {name}: {path} {BAD_TEXT}"
    # The models refuse them on their own too (not only through `validate`).
    with pytest.raises(PydanticValidationError):
        SCHEMAS[name].model_validate(data, strict=True)


def test_a_bad_object_key_is_shown_escaped() -> None:
    err = _reject("Intent", {"goal": "g", "inputs": {"a\x00": 1}, "constraints": {}})
    assert err.body["error"] == f"invalid Intent: data/inputs/a\\u0000 {BAD_TEXT}"
    json.dumps(err.body).encode("utf-8")


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"priority": 2**40}, "data/priority", "must be <= 2147483647"),
        ({"priority": -(2**31) - 1}, "data/priority", "must be >= -2147483648"),
        ({"timeoutMS": 10**30}, "data/timeoutMS", "must be <= 2147483647"),
        ({"timeoutMS": -5}, "data/timeoutMS", "must be >= 1"),
        ({"timeoutMS": 0}, "data/timeoutMS", "must be >= 1"),
        ({"workload": {"concurrency": 2**31, "steps": 0, "sandboxMinutes": 0}}, "data/workload/concurrency",
         "must be <= 2147483647"),
        ({"traceId": "x" * 257}, "data/traceId", "must NOT have more than 256 characters"),
        ({"queuePartitionKey": "x" * 257}, "data/queuePartitionKey", "must NOT have more than 256 characters"),
    ],
)  # fmt: skip
def test_run_request_bounds(body: dict[str, Any], path: str, message: str) -> None:
    assert _reject("RunRequest", body).body["error"] == f"invalid RunRequest: {path} {message}"


def test_run_request_bounds_are_inclusive() -> None:
    req = validate(
        RunRequest, {"priority": -(2**31), "timeoutMS": 2**31 - 1, "traceId": "t" * 256}, "RunRequest"
    )
    assert (req.priority, req.timeout_ms) == (-(2**31), 2**31 - 1)


@pytest.mark.parametrize("event_type", ["", " ", "\n\t"])
def test_event_type_must_not_be_blank(event_type: str) -> None:
    assert (
        _reject("RunEvent", {"type": event_type, "payload": {}})
        .body["error"]
        .startswith("invalid RunEvent: data/type must")
    )


def test_goal_length_limit() -> None:
    assert validate(Intent, {"goal": "g" * 65_536, "inputs": {}, "constraints": {}}, "Intent")
    err = _reject("Intent", {"goal": "g" * 65_537, "inputs": {}, "constraints": {}})
    assert err.body["error"] == "invalid Intent: data/goal must NOT have more than 65536 characters"


@pytest.mark.parametrize(
    "raw", [b"1e999", b'{"a":-1e999}', b'{"a":[1E400]}', b"Infinity", b"-Infinity", b"NaN"]
)
def test_non_finite_numbers_are_invalid_json(raw: bytes) -> None:
    with pytest.raises(ValidationError) as info:
        parse_json_body(raw)
    assert _http(info.value) == (400, {"error": "invalid json"})


def test_the_bounds_are_in_the_json_schema() -> None:
    props = RunRequest.model_json_schema(by_alias=True)["properties"]
    assert props["priority"]["anyOf"][0] == {"maximum": 2**31 - 1, "minimum": -(2**31), "type": "integer"}
    assert props["timeoutMS"]["anyOf"][0] == {"maximum": 2**31 - 1, "minimum": 1, "type": "integer"}
    assert props["traceId"]["anyOf"][0]["maxLength"] == 256
    event = RunEvent.model_json_schema()["properties"]["type"]
    # Not blank, and no NUL: the pattern the document shows (the model checks `\S` and `_clean`).
    assert (event["minLength"], event["maxLength"], event["pattern"]) == (1, 256, NON_BLANK_TEXT_PATTERN)
