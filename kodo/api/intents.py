"""`POST /intents` and `POST /api/intents` (contract-api §4.2), and the app's IntentService handle."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from kodo.api.errors import json_response
from kodo.api.schemas import parse_json_body, validate
from kodo.intent.requests import Intent
from kodo.intent.service import IntentService

SERVICE_KEY = "kodo.intents"

bp = Blueprint("intents", __name__)


def service() -> IntentService:
    """The IntentService of the current app (built once by `create_app`)."""
    svc: IntentService = current_app.extensions[SERVICE_KEY]
    return svc


def _create(*, empty_as_object: bool) -> Response:
    body = parse_json_body(request.get_data(), empty_as_object=empty_as_object)
    intent = validate(Intent, body, "Intent")
    return json_response({"intentId": service().create_intent(intent)}, 201)


@bp.post("/intents")
def create_intent() -> Response:
    return _create(empty_as_object=True)


@bp.post("/api/intents")
def create_api_intent() -> Response:
    # At S7 this route reads only the empty string as `{}`; whitespace is malformed JSON.
    return _create(empty_as_object=False)
