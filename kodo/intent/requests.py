"""The intent product's request models: the strict schemas of the HTTP contract (§3.1-3.4).

The pydantic models are the single source of truth: the API validates bodies against them
(`kodo.api.schemas.validate`, which also turns a failure into the contract's 400 body), the service
and the queue policy take them as typed commands, and `/openapi.json` documents them. Every object
forbids unknown keys, every optional field is nullable, and integers are strict (`1.5` and `true`
are rejected). Must not import flask.

Input limits (README "Request limits"): no string anywhere in a body (object keys included) may hold
NUL (Postgres refuses it) or an unpaired surrogate (not text); strings the contract leaves open are
bounded (`MAX_GOAL_CHARS`, `MAX_ID_CHARS`, ...); integers that reach integer columns stay within
Postgres `integer`; `timeoutMS` is 1..`MAX_TIMEOUT_MS`. `find_bad_text` is the one check, used by
these models and by `kodo.api.schemas.validate` for every model it is given.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError
from typing_extensions import TypeAliasType

from kodo.queues import QueueName

__all__ = [
    "BAD_TEXT_MESSAGE",
    "BAD_TEXT_TYPE",
    "INT32_MAX",
    "INT32_MIN",
    "MAX_GOAL_CHARS",
    "MAX_ID_CHARS",
    "MAX_NOTES_CHARS",
    "MAX_TIMEOUT_MS",
    "TEXT_PATTERN",
    "Intent",
    "NonEmptyStr",
    "PlanApprovalRequest",
    "QueueName",
    "RunEvent",
    "RunRequest",
    "StartRunRequest",
    "Text",
    "Workload",
    "find_bad_text",
]

# ---- limits (documented in the README, "Request limits") ----------------------------------------

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1  # Postgres `integer`
MAX_GOAL_CHARS = 65_536
MAX_ID_CHARS = 256  # ids, keys and names: traceId, tenantId, taskKey, queuePartitionKey, event type, ...
MAX_NOTES_CHARS = 8_192
MAX_CONNECTORS = 64
MAX_TIMEOUT_MS = INT32_MAX  # about 24.8 days

BAD_TEXT_TYPE = "string_characters"
BAD_TEXT_MESSAGE = "must not contain NUL or unpaired surrogate characters"
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def find_bad_text(value: object, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The path of the first string (value or object key) holding NUL or a lone surrogate, or None.

    Parsed JSON only ever holds lone surrogates (a pair is decoded to one character), so any
    surrogate code point in a Python str is an unpaired one.
    """
    if isinstance(value, str):
        return path if _BAD_TEXT.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _BAD_TEXT.search(key):
                return (*path, key)
            found = find_bad_text(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_bad_text(item, (*path, i))
            if found is not None:
                return found
    return None


def _clean(value: Any) -> Any:
    if find_bad_text(value) is not None:
        raise PydanticCustomError(BAD_TEXT_TYPE, BAD_TEXT_MESSAGE)
    return value


# What `_clean` enforces, as the JSON Schema says it (`/openapi.json`): no NUL. A lone surrogate is no
# Unicode scalar value, so a schema's string cannot hold one anyway (its refusal is in the description).
TEXT_PATTERN = r"^[^\u0000]*$"
NON_BLANK_TEXT_PATTERN = r"^[^\u0000]*[^\u0000\s][^\u0000]*$"  # the same, and not only whitespace
_TEXT_DOC = Field(json_schema_extra={"pattern": TEXT_PATTERN})
_CLEAN = AfterValidator(_clean)
Text = Annotated[str, _CLEAN, _TEXT_DOC]  # any length, no NUL or lone surrogate
NonEmptyStr = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), _CLEAN, _TEXT_DOC]
IdStr = Annotated[str, Field(max_length=MAX_ID_CHARS), _CLEAN, _TEXT_DOC]
GoalStr = Annotated[str, Field(min_length=1, max_length=MAX_GOAL_CHARS), _CLEAN, _TEXT_DOC]
EventType = Annotated[  # non-blank
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"\S"),
    _CLEAN,
    Field(json_schema_extra={"pattern": NON_BLANK_TEXT_PATTERN}),
]
NotesStr = Annotated[str, Field(max_length=MAX_NOTES_CHARS), _CLEAN, _TEXT_DOC]


class _CleanKeys:
    """JSON Schema only: an object's keys hold no NUL (`_clean` enforces it)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core)
        schema.pop("patternProperties", None)
        return {**schema, "propertyNames": {"pattern": TEXT_PATTERN}}


# Any JSON value whose strings and keys, at any depth, hold no NUL: what `_clean` lets through, as the
# document shows it (`JsonValue`). Validation does not use it: parsed JSON is already of these types.
JsonValue = TypeAliasType(
    "JsonValue",
    "Annotated[str, Field(pattern=TEXT_PATTERN)] | float | bool | list[JsonValue] "
    "| Annotated[dict[str, JsonValue], _CleanKeys] | None",
)
_JSON_OBJECT_DOC = TypeAdapter(Annotated[dict[str, JsonValue], _CleanKeys]).core_schema


class _JsonObjectDoc:
    """JSON Schema only: the object's schema is `_JSON_OBJECT_DOC`."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(_JSON_OBJECT_DOC)


JsonObject = Annotated[dict[str, Any], AfterValidator(_clean), _JsonObjectDoc]
NonNegativeInt = Annotated[int, Field(ge=0, le=INT32_MAX)]
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
TimeoutMs = Annotated[int, Field(ge=1, le=MAX_TIMEOUT_MS)]


class Intent(BaseModel):
    """`Intent.v0`: body of `POST /intents` and `POST /api/intents`."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Intent")

    goal: GoalStr
    inputs: JsonObject
    constraints: JsonObject
    connectors: Annotated[list[IdStr], Field(max_length=MAX_CONNECTORS)] | None = None


class Workload(BaseModel):
    """`RunRequest.workload`: checked against recipe caps only."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Workload")

    concurrency: NonNegativeInt
    steps: NonNegativeInt
    sandbox_minutes: NonNegativeInt = Field(alias="sandboxMinutes")


class RunRequest(BaseModel):
    """`RunRequest.v0`: body of `POST /intents/:id/run` (and of `POST /api/runs` minus `intentId`)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RunRequest")

    trace_id: IdStr | None = Field(default=None, alias="traceId")
    queue_name: QueueName | None = Field(default=None, alias="queueName")
    priority: Int32 | None = None
    deduplication_id: IdStr | None = Field(default=None, alias="deduplicationID")
    timeout_ms: TimeoutMs | None = Field(default=None, alias="timeoutMS")
    recipe_name: IdStr | None = Field(default=None, alias="recipeName")
    recipe_version: int | None = Field(default=None, alias="recipeVersion")  # a lookup key only
    workload: Workload | None = None
    tenant_id: NonEmptyStr | None = Field(default=None, alias="tenantId")
    task_key: NonEmptyStr | None = Field(default=None, alias="taskKey")
    queue_partition_key: NonEmptyStr | None = Field(default=None, alias="queuePartitionKey")


class RunEvent(BaseModel):
    """`RunEvent.v0`: body of `POST /runs/:id/events`."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RunEvent")

    type: EventType
    payload: JsonObject


class PlanApprovalRequest(BaseModel):
    """`PlanApprovalRequest.v0`: body of both approve-plan routes."""

    model_config = ConfigDict(extra="forbid", strict=True, title="PlanApprovalRequest")

    approved_by: NonEmptyStr = Field(alias="approvedBy")
    notes: NotesStr | None = None


class StartRunRequest(RunRequest):
    """Body of `POST /api/runs`: a RunRequest plus the intent to run (checked first, §4.4).

    The route reads `intentId` itself (400 `intentId required` when it is missing or empty) and
    validates the other keys as `RunRequest`; this model is what the document shows of the whole."""

    model_config = ConfigDict(extra="forbid", strict=True, title="StartRunRequest")

    intent_id: NonEmptyStr = Field(alias="intentId")
