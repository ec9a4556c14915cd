"""`POST /intents` and `POST /api/intents` (contract-api §4.2), and the app's IntentService handle."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from typing_extensions import TypedDict

from kodo.api.errors import json_response
from kodo.api.openapi import Link, body_of, operation
from kodo.intent.requests import Intent
from kodo.intent.service import IntentService

SERVICE_KEY = "kodo.intents"

bp = Blueprint("intents", __name__)


class IntentCreated(TypedDict):
    intentId: str


def service() -> IntentService:
    """The IntentService of the current app (built once by `create_app`)."""
    svc: IntentService = current_app.extensions[SERVICE_KEY]
    return svc


def _create(*, empty_as_object: bool) -> Response:
    intent = body_of(Intent, empty_as_object=empty_as_object)
    return json_response({"intentId": service().create_intent(intent)}, 201)


_INTENT_ID = "$response.body#/intentId"


@bp.post("/intents")
@operation(
    "Create an intent (legacy)",
    {201: IntentCreated},
    body=Intent,
    body_required=True,
    links={201: {"StartRun": Link("runs.start_legacy", {"intent_id": _INTENT_ID})}},
)
def create_intent() -> Response:
    return _create(empty_as_object=True)


@bp.post("/api/intents")
@operation(
    "Create an intent",
    {201: IntentCreated},
    body=Intent,
    body_required=True,
    links={
        201: {
            "StartApiRun": Link(
                "runs.start_api", body={"intentId": _INTENT_ID, "queuePartitionKey": "tenant-a"}
            ),
            "StartRun": Link("runs.start_legacy", {"intent_id": _INTENT_ID}),
        }
    },
)
def create_api_intent() -> Response:
    # At S7 this route reads only the empty string as `{}`; whitespace is malformed JSON.
    return _create(empty_as_object=False)
