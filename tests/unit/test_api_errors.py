"""`kodo.api.errors` is the one place an HTTP status is chosen: every kodo error has its status and
exact body there, and no route module picks an error status of its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kodo.api.errors import to_http
from kodo.errors import (
    ConfigError,
    ConflictError,
    KodoError,
    NotFoundError,
    QueuePolicyError,
    RunStateError,
    SchemaError,
    UnavailableError,
    ValidationError,
)

API_DIR = Path(__file__).resolve().parents[2] / "kodo" / "api"
DETAILS = [
    {"instancePath": "", "schemaPath": "#/required", "keyword": "required", "params": {}, "message": "m"}
]


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (ValidationError("invalid json"), 400, {"error": "invalid json"}),
        (
            SchemaError("invalid Intent: x", details=DETAILS),
            400,
            {"error": "invalid Intent: x", "details": DETAILS},
        ),
        (
            QueuePolicyError("tenantId cannot be blank"),
            400,
            {"error": "tenantId cannot be blank", "code": "queue_policy_violation"},
        ),
        (NotFoundError("run not found"), 404, {"error": "run not found"}),
        (
            RunStateError("cannot retry run in status queued", run_status="queued"),
            409,
            {"error": "cannot retry run in status queued", "status": "queued"},
        ),
        (ConflictError("cannot cancel"), 409, {"error": "cannot cancel"}),
        (UnavailableError("database unavailable"), 503, {"ok": False, "error": "database unavailable"}),
        (ConfigError("secret detail"), 500, {"error": "internal error"}),
        (KodoError("secret detail"), 500, {"error": "internal error"}),
    ],
)
def test_each_error_has_its_status_and_exact_body(exc: KodoError, status: int, body: dict[str, Any]) -> None:
    got_status, got_body = to_http(exc)
    assert (got_status, got_body) == (status, body)
    assert list(got_body) == list(body)  # key order is part of the contract's bodies


def test_the_queue_policy_code_is_the_contracts() -> None:
    assert QueuePolicyError.code == "queue_policy_violation"


# An error status picked outside errors.py: a literal 4xx/5xx passed to a response or an exception,
# Flask's abort(), or a status assigned by hand.
_INLINE_STATUS = re.compile(
    r"""\babort\(|\bApiError\b|\bbad_request\(|status(?:_code)?\s*=\s*[45]\d\d\b|,\s*[45]\d\d\s*\)"""
)


def test_no_route_module_chooses_an_error_status() -> None:
    offenders = {
        p.name: [line.strip() for line in p.read_text().splitlines() if _INLINE_STATUS.search(line)]
        for p in sorted(API_DIR.glob("*.py"))
        if p.name not in ("errors.py", "openapi.py")  # openapi.py documents the statuses
    }
    assert {name: lines for name, lines in offenders.items() if lines} == {}
