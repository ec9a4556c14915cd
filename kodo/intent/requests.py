"""The intent product's request models: the strict schemas of the HTTP contract (§3.1-3.4).

The pydantic models are the single source of truth: the API validates bodies against them
(`kodo.api.schemas.validate`, which also turns a failure into the contract's 400 body), the service
and the queue policy take them as typed commands, and `/openapi.json` documents them. Every object
forbids unknown keys, every optional field is nullable, and integers are strict (`1.5` and `true`
are rejected). Must not import flask.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from kodo.queues import QueueName

__all__ = [
    "Intent",
    "NonEmptyStr",
    "PlanApprovalRequest",
    "QueueName",
    "RunEvent",
    "RunRequest",
    "Workload",
]

NonEmptyStr = Annotated[str, Field(min_length=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Intent(BaseModel):
    """`Intent.v0`: body of `POST /intents` and `POST /api/intents`."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Intent")

    goal: NonEmptyStr
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    connectors: list[str] | None = None


class Workload(BaseModel):
    """`RunRequest.workload`: checked against recipe caps only."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Workload")

    concurrency: NonNegativeInt
    steps: NonNegativeInt
    sandbox_minutes: NonNegativeInt = Field(alias="sandboxMinutes")


class RunRequest(BaseModel):
    """`RunRequest.v0`: body of `POST /intents/:id/run` (and of `POST /api/runs` minus `intentId`)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RunRequest")

    trace_id: str | None = Field(default=None, alias="traceId")
    queue_name: QueueName | None = Field(default=None, alias="queueName")
    priority: int | None = None
    deduplication_id: str | None = Field(default=None, alias="deduplicationID")
    timeout_ms: int | None = Field(default=None, alias="timeoutMS")
    recipe_name: str | None = Field(default=None, alias="recipeName")
    recipe_version: int | None = Field(default=None, alias="recipeVersion")
    workload: Workload | None = None
    tenant_id: NonEmptyStr | None = Field(default=None, alias="tenantId")
    task_key: NonEmptyStr | None = Field(default=None, alias="taskKey")
    queue_partition_key: NonEmptyStr | None = Field(default=None, alias="queuePartitionKey")


class RunEvent(BaseModel):
    """`RunEvent.v0`: body of `POST /runs/:id/events`."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RunEvent")

    type: str
    payload: dict[str, Any]


class PlanApprovalRequest(BaseModel):
    """`PlanApprovalRequest.v0`: body of both approve-plan routes."""

    model_config = ConfigDict(extra="forbid", strict=True, title="PlanApprovalRequest")

    approved_by: NonEmptyStr = Field(alias="approvedBy")
    notes: str | None = None
