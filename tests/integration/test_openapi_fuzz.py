"""Schemathesis against `/openapi.json` (issue 8): the app in-process, the real test Postgres and Redis.

Every phase runs: examples, coverage and fuzzing per operation (`test_operation`, bounded by
MAX_EXAMPLES), then stateful sequences that follow the document's links from the create routes to
the read and act routes (`test_stateful`). Checks: schemathesis' own (no 5xx, schema-valid requests
accepted, no undocumented status code, responses and content types as documented, auth enforced ...)
and two of kodo's: every 4xx is a JSON `ErrorBody` whose `error` is one of the stable messages
(`ERRORS`), and a 4xx leaves the row count of every table in schemas `app` and `dbos` unchanged.

Tokens are on (KODO_API_TOKENS), so the document applies `security` and schemathesis checks that
the protected routes refuse a request without the token. Turned off: `unsupported_method` (a wrong
method is 404, not 405: contract-api §1.1). A deduplication id (`deduplicationID`, else `taskKey`)
already taken by another intent's run is skipped: that clash is the contract's 500 (§1.5 exception
1, tests/integration/test_api_routes.py), not something a generated request should meet by chance.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from schemathesis import Case as AnyCase
from schemathesis.checks import CheckContext
from schemathesis.config import SchemathesisConfig

from kodo.api import create_app
from kodo.config import Settings
from kodo.db import pool
from kodo.runtime import Runtime

MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 40
TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Every 4xx `error` the API answers: exact texts, then the templates of those that name a value.
ERRORS = re.compile(
    "|".join(
        [
            r"invalid json",
            r"invalid json payload",
            r"intentId required",
            r"wf query param required",
            r"sleep query param must be whole milliseconds \(0\.\.86400000\)",
            r"invalid request parameter: must not contain NUL or unpaired surrogate characters",
            r"invalid [A-Za-z]+: .+",
            r"recipe not found: .*",
            r"unsupported queueName: .*",
            r"parent intent workflow must use intentQ \(got .*\)",
            r"recipe cap exceeded: \w+ \d+ > \d+",
            r"(tenantId|taskKey) cannot be blank",
            r"queuePartitionKey is required for partitioned operations \(queue: \w+, isParent: true\)",
            r"not found",
            r"run not found",
            r"intent not found",
            r"artifact not found",
            r"Intent not found: .*",
            r"workflow not found: .*",
            r"cannot (send event to|retry) run in status \w+(: its workflow was never enqueued)?",
            r"cannot (cancel|resume) workflow in status \w+",
            r"fork stepN \d+ exceeds max step \d+",
            r"workflow .+ (exists|belongs to|is not a sleep).*",
            r"request body too large",
            r"unauthorized",
            r"forbidden",
        ]
    ),
    re.DOTALL,
)


class Rows:
    """Row counts of every table in schemas app and dbos, before each call (for the 4xx check)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.before: dict[str, int] | None = None
        with pool.connect(database_url) as c:
            tables = [
                r["t"]
                for r in c.execute(
                    "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
                    "WHERE table_schema IN ('app', 'dbos') AND table_type = 'BASE TABLE' ORDER BY 1"
                ).fetchall()
            ]
        self.query = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables)

    def count(self) -> dict[str, int]:
        with pool.connect(self.url) as c:
            return {r["t"]: int(r["n"]) for r in c.execute(self.query).fetchall()}


ROWS: Rows | None = None


@schemathesis.check
def error_is_stable_json(ctx: CheckContext, response: schemathesis.Response, case: AnyCase[Any]) -> bool:
    """Every 4xx: `application/json`, an object with a stable `error` (ERRORS) and only the keys
    of ErrorBody."""
    if not 400 <= response.status_code < 500:
        return True
    assert response.headers.get("content-type") == ["application/json"], response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert set(body) <= {"error", "details", "code", "status"}, body
    assert ERRORS.fullmatch(body["error"]), f"not a stable error: {body['error']!r}"
    return True


@schemathesis.check
def rows_unchanged_on_4xx(ctx: CheckContext, response: schemathesis.Response, case: AnyCase[Any]) -> bool:
    """A refused request (4xx) writes nothing: the row count of every app.* and dbos.* table holds."""
    if not 400 <= response.status_code < 500 or ROWS is None or ROWS.before is None:
        return True
    after = ROWS.count()
    changed = {t: (ROWS.before.get(t), n) for t, n in after.items() if ROWS.before.get(t) != n}
    assert not changed, f"a {response.status_code} wrote rows: {changed}"
    return True


def _config() -> SchemathesisConfig:
    config = SchemathesisConfig.from_dict(
        {
            "checks": {"unsupported_method": {"enabled": False}},
            "phases": {"stateful": {"max-steps": 8}},
            "generation": {"max-examples": MAX_EXAMPLES},
        }
    )
    return config


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    settings = Settings.from_env({**_env(), "KODO_API_TOKENS": f"fuzz:{TOKEN}"})
    yield create_app(runtime=Runtime.build(settings))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


DEDUP_OWNERS: dict[str, str] = {}


def _dedup_clash(case: AnyCase[Any]) -> bool:
    """Whether this start would take a deduplication id another intent's run holds (contract 500)."""
    body = case.body if isinstance(case.body, dict) else None
    if case.method != "POST" or body is None:
        return False
    if case.path == "/api/runs":
        intent = body.get("intentId")
    elif case.path == "/intents/{intent_id}/run":
        intent = (case.path_parameters or {}).get("intent_id")
    else:
        return False
    key = body.get("deduplicationID")
    key = body.get("taskKey") if key is None else key
    if not isinstance(key, str) or not isinstance(intent, str):
        return False
    owner = DEDUP_OWNERS.setdefault(key, intent)
    return owner != intent


def _call(case: AnyCase[Any]) -> schemathesis.Response:
    """One request with the kodo checks around it."""
    assert ROWS is not None
    hypothesis.assume(not _dedup_clash(case))
    ROWS.before = ROWS.count()
    headers = {**AUTH, **dict(case.headers or {})}
    response = case.call(headers=headers)
    case.validate_response(response, headers=headers)  # every enabled check, kodo's two included
    return response


@pytest.fixture(scope="module")
def schema(app: Flask) -> Any:
    global ROWS
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", app, config=_config())
    ROWS = Rows(app.extensions["kodo.runtime"].settings.database_url)
    return loaded


lazy = schemathesis.pytest.from_fixture("schema")


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis' lazy loader reads `node._nodeid`, which pytest 9 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@lazy.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_operation(case: AnyCase[Any]) -> None:
    _call(case)


def test_stateful(schema: Any) -> None:
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc,valid-type]
        def before_call(self, case: AnyCase[Any]) -> None:
            assert ROWS is not None
            hypothesis.assume(not _dedup_clash(case))
            ROWS.before = ROWS.count()

        def get_call_kwargs(self, case: AnyCase[Any]) -> dict[str, Any]:
            return {"headers": {**AUTH, **dict(case.headers or {})}}

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
