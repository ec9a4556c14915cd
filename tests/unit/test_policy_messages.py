"""Queue policy (contract-api §5.2): the rules in order, first failure wins, exact messages.

A violation is a `QueuePolicyError`; its HTTP status and body come from `kodo.api.errors.to_http`.
"""

from __future__ import annotations

from typing import Any

import pytest

from kodo.api.errors import to_http
from kodo.errors import QueuePolicyError
from kodo.intent.policy import QueuePolicy, Recipe, check, recipe_name_of
from kodo.intent.requests import RunRequest
from kodo.queues import (
    COMPILE_QUEUE,
    CONTROL_QUEUE,
    INTENT_QUEUE,
    REQUESTABLE_QUEUES,
    SBX_QUEUE,
    WORKER_QUEUES,
)

COMPILE = Recipe("compile-default", 1, "intentQ", 10, 32, 15)
SANDBOX = Recipe("sandbox-default", 1, "intentQ", 20, 128, 60)
KEY = {"queuePartitionKey": "tenant-a"}


def _req(**body: Any) -> RunRequest:
    return RunRequest.model_validate(body, strict=True)


def _violation(recipe: Recipe | None, body: dict[str, Any], *, partition_law: bool = True) -> str:
    with pytest.raises(QueuePolicyError) as err:
        check(recipe, _req(**body), partition_law=partition_law)
    status, http_body = to_http(err.value)
    assert status == 400
    assert http_body["code"] == "queue_policy_violation"
    assert list(http_body) == ["error", "code"]
    message: str = http_body["error"]
    return message


@pytest.mark.parametrize(
    ("recipe", "body", "message"),
    [
        (None, {}, "recipe not found: compile-default"),
        (None, {"recipeName": "nope", "recipeVersion": 9}, "recipe not found: nope"),
        (None, {"recipeName": ""}, "recipe not found: "),  # only null/absent falls back (`??`)
        (COMPILE, {"queueName": "sbxQ", **KEY}, "parent intent workflow must use intentQ (got sbxQ)"),
        (COMPILE, {"queueName": "controlQ"}, "parent intent workflow must use intentQ (got controlQ)"),
        (
            Recipe("odd", 1, "weirdQ", 1, 1, 1),
            {},
            "unsupported queueName: weirdQ",
        ),
        (
            Recipe("legacy", 1, "compileQ", 1, 1, 1),
            {},
            "parent intent workflow must use intentQ (got compileQ)",
        ),
        (
            SANDBOX,
            {"workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1}},
            "recipe cap exceeded: concurrency 999 > 20",
        ),
        (
            SANDBOX,
            {"workload": {"concurrency": 21, "steps": 999, "sandboxMinutes": 999}},
            "recipe cap exceeded: concurrency 21 > 20",
        ),
        (
            COMPILE,
            {"workload": {"concurrency": 10, "steps": 33, "sandboxMinutes": 999}},
            "recipe cap exceeded: steps 33 > 32",
        ),
        (
            COMPILE,
            {"workload": {"concurrency": 10, "steps": 32, "sandboxMinutes": 16}},
            "recipe cap exceeded: sandboxMinutes 16 > 15",
        ),
        (COMPILE, {"tenantId": "   ", "taskKey": " "}, "tenantId cannot be blank"),
        (COMPILE, {"taskKey": "\t "}, "taskKey cannot be blank"),
        (
            COMPILE,
            {},
            "queuePartitionKey is required for partitioned operations (queue: intentQ, isParent: true)",
        ),
        (
            COMPILE,
            {"queuePartitionKey": "  "},
            "queuePartitionKey is required for partitioned operations (queue: intentQ, isParent: true)",
        ),
    ],
)
def test_messages_in_evaluation_order(recipe: Recipe | None, body: dict[str, Any], message: str) -> None:
    assert _violation(recipe, body) == message


def test_caps_are_reported_before_the_missing_partition_key() -> None:
    # Seed L04 / Walkthrough D: the cap probe has no partition key and still gets the cap message.
    body = {
        "recipeName": "sandbox-default",
        "workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1},
    }
    assert _violation(SANDBOX, body) == "recipe cap exceeded: concurrency 999 > 20"


def test_caps_at_the_limit_pass() -> None:
    body = {"workload": {"concurrency": 20, "steps": 128, "sandboxMinutes": 60}, **KEY}
    assert check(SANDBOX, _req(**body), partition_law=True).queue_name == "intentQ"


def test_blank_checks_come_after_caps() -> None:
    body = {"tenantId": " ", "workload": {"concurrency": 11, "steps": 1, "sandboxMinutes": 1}}
    assert _violation(COMPILE, body) == "recipe cap exceeded: concurrency 11 > 10"


def test_partition_law_off_makes_the_key_optional() -> None:
    policy = check(COMPILE, _req(), partition_law=False)
    assert policy == QueuePolicy(
        queue_name="intentQ",
        priority=None,
        deduplication_id=None,
        timeout_ms=None,
        queue_partition_key=None,
        recipe_name="compile-default",
        recipe_version=1,
    )
    # Blank checks still apply without the partition law.
    assert _violation(COMPILE, {"tenantId": " "}, partition_law=False) == "tenantId cannot be blank"


def test_resolved_policy_carries_the_engine_options() -> None:
    body = {
        "queueName": "intentQ",
        "priority": 3,
        "timeoutMS": 5000,
        "taskKey": "tk-1",
        "tenantId": "t",
        **KEY,
    }
    policy = check(COMPILE, _req(**body), partition_law=True)
    assert (policy.queue_name, policy.priority, policy.timeout_ms) == ("intentQ", 3, 5000)
    assert policy.deduplication_id == "tk-1"  # defaults to taskKey
    assert policy.queue_partition_key == "tenant-a"
    assert (policy.recipe_name, policy.recipe_version) == ("compile-default", 1)


def test_explicit_deduplication_id_wins_over_task_key() -> None:
    policy = check(COMPILE, _req(deduplicationID="d", taskKey="tk", **KEY), partition_law=True)
    assert policy.deduplication_id == "d"


def test_default_recipe_name() -> None:
    assert recipe_name_of(_req()) == "compile-default"
    assert recipe_name_of(_req(recipeName="sandbox-default")) == "sandbox-default"


def test_the_queue_names_are_defined_once() -> None:
    # QueueName is a Literal (it cannot name the constants): its values must be exactly the queues.
    assert REQUESTABLE_QUEUES == ("compileQ", "sbxQ", "controlQ", "intentQ")
    assert set(REQUESTABLE_QUEUES) == {COMPILE_QUEUE, *WORKER_QUEUES}
    assert (INTENT_QUEUE, SBX_QUEUE, CONTROL_QUEUE) == WORKER_QUEUES
