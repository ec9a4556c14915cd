"""Queue policy of a parent run start (contract-api §5.2): recipe, queue, caps, dedupe, partition law.

Read-only. `resolve` looks the recipe up and `check` applies the rules in the contract's order; the
first failure wins and raises `QueuePolicyError` (HTTP: 400 `queue_policy_violation`) with the
original's exact message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import QueuePolicyError
from kodo.intent.requests import NON_BLANK_TEXT_PATTERN, RunRequest
from kodo.queues import INTENT_QUEUE, REQUESTABLE_QUEUES

DEFAULT_RECIPE = "compile-default"


@dataclass(frozen=True)
class Recipe:
    """One `app.recipes` row: the queue default and the workload caps."""

    name: str
    version: int
    queue_name: str
    max_concurrency: int
    max_steps: int
    max_sandbox_minutes: int


@dataclass(frozen=True)
class QueuePolicy:
    """What a start may do: the queue and engine options, and the partition key to store."""

    queue_name: str
    priority: int | None
    deduplication_id: str | None
    timeout_ms: int | None
    queue_partition_key: str | None
    recipe_name: str
    recipe_version: int


def recipe_name_of(req: RunRequest) -> str:
    return DEFAULT_RECIPE if req.recipe_name is None else req.recipe_name


def resolve(c: Conn, req: RunRequest, *, partition_law: bool) -> QueuePolicy:
    """Look the recipe up (exact version, else the latest) and apply `check`."""
    row = c.execute(
        Q["api_find_recipe"], {"name": recipe_name_of(req), "version": req.recipe_version}
    ).fetchone()
    return check(None if row is None else _recipe(row), req, partition_law=partition_law)


def recipes(c: Conn) -> list[Recipe]:
    return [_recipe(row) for row in c.execute(Q["api_list_recipes"]).fetchall()]


def request_schema(recipes: Sequence[Recipe], *, partition_law: bool) -> dict[str, Any]:
    """The JSON Schema of what `check` admits beyond the RunRequest model, for `/openapi.json`: one
    branch per recipe (its name, its version, the queue it resolves to, its caps), non-blank
    tenantId/taskKey and, under the partition law, a non-blank queuePartitionKey. A body valid by
    RunRequest and by this schema passes the policy."""
    latest: dict[str, int] = {}
    for r in recipes:
        latest[r.name] = max(r.version, latest.get(r.name, r.version))
    branches: list[dict[str, Any]] = []
    for r in recipes:
        required: list[str] = []
        if r.name != DEFAULT_RECIPE:
            required.append("recipeName")
        if r.version != latest[r.name]:
            required.append("recipeVersion")
        if r.queue_name != INTENT_QUEUE:
            required.append("queueName")
        branches.append(
            {
                "required": required,
                "properties": {
                    "recipeName": {"enum": [r.name, None] if r.name == DEFAULT_RECIPE else [r.name]},
                    "recipeVersion": {
                        "enum": [r.version, None] if r.version == latest[r.name] else [r.version]
                    },
                    "queueName": {
                        "enum": [INTENT_QUEUE, None] if r.queue_name == INTENT_QUEUE else [INTENT_QUEUE]
                    },
                    "workload": {
                        "properties": {
                            "concurrency": {"maximum": r.max_concurrency},
                            "steps": {"maximum": r.max_steps},
                            "sandboxMinutes": {"maximum": r.max_sandbox_minutes},
                        }
                    },
                },
            }
        )
    non_blank = {"pattern": NON_BLANK_TEXT_PATTERN}
    schema: dict[str, Any] = {
        "title": "QueuePolicy",
        "description": "The queue policy (contract-api §5.2; a violation is 400 `queue_policy_violation`): "
        "a recipe of app.recipes (default compile-default, its latest version), a parent on intentQ, "
        "the recipe's workload caps, non-blank tenantId and taskKey"
        + (", and a non-blank queuePartitionKey (SBX_QUEUE_PARTITION)." if partition_law else "."),
        "properties": {"tenantId": non_blank, "taskKey": non_blank, "queuePartitionKey": non_blank},
        "anyOf": branches or [{"not": {}}],
    }
    if partition_law:
        schema["required"] = ["queuePartitionKey"]
    return schema


def _recipe(row: dict[str, Any]) -> Recipe:
    return Recipe(**{k: row[k] for k in Recipe.__dataclass_fields__})


def _blank(value: str | None) -> bool:
    return value is not None and value.strip() == ""


def check(recipe: Recipe | None, req: RunRequest, *, partition_law: bool) -> QueuePolicy:
    """The rules of §5.2 in order. `partition_law` is SBX_QUEUE_PARTITION (parent starts)."""
    if recipe is None:
        raise QueuePolicyError(f"recipe not found: {recipe_name_of(req)}")
    queue = recipe.queue_name if req.queue_name is None else req.queue_name
    if queue not in REQUESTABLE_QUEUES:
        raise QueuePolicyError(f"unsupported queueName: {queue}")
    if queue != INTENT_QUEUE:
        raise QueuePolicyError(f"parent intent workflow must use intentQ (got {queue})")
    if req.workload is not None:
        caps = (
            ("concurrency", req.workload.concurrency, recipe.max_concurrency),
            ("steps", req.workload.steps, recipe.max_steps),
            ("sandboxMinutes", req.workload.sandbox_minutes, recipe.max_sandbox_minutes),
        )
        for name, value, cap in caps:
            if value > cap:
                raise QueuePolicyError(f"recipe cap exceeded: {name} {value} > {cap}")
    deduplication_id = req.task_key if req.deduplication_id is None else req.deduplication_id
    if _blank(req.tenant_id):
        raise QueuePolicyError("tenantId cannot be blank")
    if _blank(req.task_key):
        raise QueuePolicyError("taskKey cannot be blank")
    # Partition law. Only parents reach here, on intentQ (an sbxQ start would always need a key).
    if partition_law and (req.queue_partition_key is None or _blank(req.queue_partition_key)):
        raise QueuePolicyError(
            f"queuePartitionKey is required for partitioned operations (queue: {queue}, isParent: true)"
        )
    return QueuePolicy(
        queue_name=queue,
        priority=req.priority,
        deduplication_id=deduplication_id,
        timeout_ms=req.timeout_ms,
        queue_partition_key=req.queue_partition_key,
        recipe_name=recipe.name,
        recipe_version=recipe.version,
    )
