"""`GET /openapi.json`: an OpenAPI 3.1 document of every route the app serves, built from the routes.

One place describes an operation: its route registration. Each view carries an `Operation`
(`@operation(...)` under `@bp.get/post`), naming the pydantic models of its body and query and the
types of its responses; the handler validates with the same models (`body_of`, `query_of`), so the
document says exactly what the validators enforce. The paths come from the app's URL map (a served
route cannot be missing), the schemas are pydantic's JSON Schemas of those models and of the
TypedDicts that check responses (`kodo.intent.projections`, `kodo.intent.ops`), and every error
response is `ErrorBody`. Three facts come from the running app, not from a model: the queue policy
of a run start (`kodo.intent.policy.request_schema`: recipes in `app.recipes`, the partition law),
the bearer tokens (`kodo.api.auth`: with `KODO_API_TOKENS` set, the protected operations say
`security` and 401/403), and the body limit (413 on every operation that reads a body).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypeVar

from flask import Blueprint, Flask, Response, current_app, request
from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypedDict

import kodo
from kodo.api import auth
from kodo.api.errors import json_response
from kodo.api.schemas import parse_json_body, validate
from kodo.intent.requests import TEXT_PATTERN, RunRequest

bp = Blueprint("openapi", __name__)

V = TypeVar("V", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

# ---- shapes every operation shares -----------------------------------------------------------------


class ErrorBody(TypedDict):
    """Every error: `error`, plus `details` (schema), `code` (queue policy, 503) or `status` (409)."""

    error: str
    details: NotRequired[list[dict[str, Any]]]
    code: NotRequired[Literal["queue_policy_violation", "db_unavailable"]]
    status: NotRequired[str]


class OpenApiDocument(TypedDict):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from a success response to the operation of `endpoint` (a Flask endpoint):
    `parameters` and `body` hold runtime expressions such as `$response.body#/runId`."""

    endpoint: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Operation:
    """One route's description: what it reads, what it answers.

    `responses` maps each success status to its type (a TypedDict, a model, `list[...]`) or to a
    content map; `errors` lists the error statuses the handler itself answers (each an `ErrorBody`).
    400 is added for any operation with a parameter or a body (NUL in an id or a query value), 404
    for one with a path parameter (an empty segment matches no route), 413 for one with a body.
    `body_required=False` means an empty body is read as `{}`.
    """

    summary: str
    responses: Mapping[int, Any]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = False
    body_name: str | None = None  # the schema name in `invalid <Schema>: ...` (default: the title)
    query: type[BaseModel] | None = None
    tags: tuple[str, ...] = ("intent",)
    links: Mapping[int, Mapping[str, Link]] = field(default_factory=dict)

    @property
    def schema_name(self) -> str:
        assert self.body is not None
        return self.body_name or str(self.body.model_config.get("title") or self.body.__name__)


def operation(
    summary: str,
    responses: Mapping[int, Any],
    *,
    errors: tuple[int, ...] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = False,
    body_name: str | None = None,
    query: type[BaseModel] | None = None,
    tags: tuple[str, ...] = ("intent",),
    links: Mapping[int, Mapping[str, Link]] | None = None,
) -> Callable[[V], V]:
    """Describe a view (put it under `@bp.get/post`): the document and the validators read this."""
    op = Operation(summary, responses, errors, body, body_required, body_name, query, tags, links or {})

    def mark(view: V) -> V:
        view.kodo_operation = op  # type: ignore[attr-defined]
        return view

    return mark


def operation_of(app: Flask, endpoint: str) -> Operation | None:
    op: Operation | None = getattr(app.view_functions.get(endpoint), "kodo_operation", None)
    return op


def current_operation() -> Operation:
    op = operation_of(current_app, request.endpoint or "")
    if op is None:
        raise LookupError(f"route {request.endpoint} has no @operation")
    return op


def body_of(model: type[M], *, empty_as_object: bool = True) -> M:
    """The request body, parsed and validated against the operation's body model (`model` must be
    it: the document shows that one)."""
    op = current_operation()
    if op.body is not model:
        raise LookupError(f"route {request.endpoint} documents {op.body}, not {model}")
    return validate(
        model, parse_json_body(request.get_data(), empty_as_object=empty_as_object), op.schema_name
    )


# ---- the document ----------------------------------------------------------------------------------

# Error statuses an operation documents (the statuses themselves are chosen by kodo.api.errors).
NOT_FOUND, CONFLICT, INTERNAL, UNAVAILABLE = 404, 409, 500, 503

_REF = "#/components/schemas/{model}"
_ARG = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_ERROR = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DESCRIPTIONS = {
    400: "bad request (`invalid json`, `invalid <Schema>: ...` with `details`, a queue policy `code`, "
    "or NUL / an unpaired surrogate in a path id or query value)",
    401: "`unauthorized`: no `Authorization: Bearer <token>` header (with KODO_API_TOKENS set)",
    403: "`forbidden`: the bearer token is not one of KODO_API_TOKENS",
    404: "not found",
    409: "conflict with the resource's state",
    413: "`request body too large` (KODO_MAX_BODY_BYTES)",
    500: "internal error (a start whose enqueue failed leaves its run `failed`)",
    503: "a dependency does not answer",
}
PATH_PARAMETER = {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN}


def _path(rule: str) -> str:
    return _ARG.sub(r"{\1}", rule)


def _operation_id(method: str, endpoint: str) -> str:
    return f"{method.lower()}_{endpoint.replace('.', '_')}"


def _routes(app: Flask) -> list[tuple[str, str, list[str], str, Operation | None]]:
    """(method, path, path args, endpoint, operation) of every served route, sorted by path."""
    out = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append(
                (
                    method,
                    _path(rule.rule),
                    _ARG.findall(rule.rule),
                    rule.endpoint,
                    operation_of(app, rule.endpoint),
                )
            )
    return out


def _schemas(ops: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """JSON Schemas of every documented type: (type -> schema or $ref, named component schemas).
    Bodies and queries in validation mode (what is accepted), responses in serialization mode."""
    keyed: list[tuple[Any, Literal["validation", "serialization"]]] = []
    for op in ops:
        for t in (op.body, op.query):
            if t is not None and (t, "validation") not in keyed:
                keyed.append((t, "validation"))
        for t in [*op.responses.values(), ErrorBody]:
            if not isinstance(t, dict) and (t, "serialization") not in keyed:
                keyed.append((t, "serialization"))
    schemas, defs = TypeAdapter.json_schemas(
        [(i, mode, TypeAdapter(t)) for i, (t, mode) in enumerate(keyed)],
        ref_template=_REF,
    )
    by_type = {(t, mode): schemas[(i, mode)] for i, (t, mode) in enumerate(keyed)}
    return by_type, defs.get("$defs", {})


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _query_parameters(model: type[BaseModel], schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    params = []
    for name, given in schema.get("properties", {}).items():
        prop = {k: v for k, v in given.items() if k != "title"}
        # An optional query value is absent, never `null`: the query string has no null.
        if "anyOf" in prop and {"type": "null"} in prop["anyOf"]:
            rest = [s for s in prop.pop("anyOf") if s != {"type": "null"}]
            prop = {**(rest[0] if len(rest) == 1 else {"anyOf": rest}), **prop}
            if prop.get("default", 0) is None:
                del prop["default"]
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop.pop("description")
        params.append(param)
    return params


def _links(app: Flask, links: Mapping[str, Link]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, link in links.items():
        methods = next((r.methods for r in app.url_map.iter_rules() if r.endpoint == link.endpoint), None)
        if not methods:
            continue
        (method,) = set(methods) - {"HEAD", "OPTIONS"}
        target: dict[str, Any] = {"operationId": _operation_id(method, link.endpoint)}
        if link.parameters:
            target["parameters"] = dict(link.parameters)
        if link.body is not None:
            target["requestBody"] = dict(link.body)
        out[name] = target
    return out


def _describe(
    app: Flask,
    method: str,
    path: str,
    args: list[str],
    endpoint: str,
    op: Operation | None,
    by_type: dict[Any, Any],
    defs: dict[str, Any],
    policy: dict[str, Any] | None,
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": a, "in": "path", "required": True, "schema": PATH_PARAMETER} for a in args
    ]
    out: dict[str, Any] = {"operationId": _operation_id(method, endpoint)}
    if op is None:  # a route nobody described: listed, with the bare minimum (a unit test forbids it)
        out["parameters"] = params
        out["responses"] = {"default": {"description": "undescribed"}}
        return out
    out["summary"] = op.summary
    out["tags"] = list(op.tags)
    if op.query is not None:
        name = by_type[(op.query, "validation")]["$ref"].rsplit("/", 1)[-1]
        params += _query_parameters(op.query, defs[name])
    if params:
        out["parameters"] = params
    if op.body is not None:
        schema = by_type[(op.body, "validation")]
        required = op.body_required
        if policy is not None and issubclass(op.body, RunRequest):
            schema = {"allOf": [schema, policy]}
            required = required or bool(policy.get("required"))  # `{}` (an empty body) fails it
        out["requestBody"] = {"required": required, "content": _json(schema)}
    responses: dict[str, Any] = {}
    for status, kind in op.responses.items():
        content = kind if isinstance(kind, dict) else _json(by_type[(kind, "serialization")])
        responses[str(status)] = {"description": "ok", "content": content}
        if op.links.get(status):
            responses[str(status)]["links"] = _links(app, op.links[status])
    errors = set(op.errors)
    if params or op.body is not None:
        errors.add(400)
    if args:
        errors.add(404)
    if op.body is not None or method in _BODY_METHODS:
        errors.add(413)
    if auth.enabled(app) and auth.protected(method, path):
        out["security"] = [{auth.SCHEME: []}]
        errors |= {401, 403}
    for status in sorted(errors):
        responses[str(status)] = {"description": _DESCRIPTIONS.get(status, "error"), "content": _ERROR}
    out["responses"] = responses
    return out


def document(app: Flask | None = None, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document of `app` (default: the current one). `policy` is the JSON Schema every
    run start's body must also meet (the queue policy's; `kodo.intent.policy.request_schema`)."""
    app = app or current_app
    routes = _routes(app)
    by_type, defs = _schemas([op for *_, op in routes if op is not None])
    paths: dict[str, dict[str, Any]] = {}
    for method, path, args, endpoint, op in routes:
        paths.setdefault(path, {})[method.lower()] = _describe(
            app, method, path, args, endpoint, op, by_type, defs, policy
        )
    components: dict[str, Any] = {
        "schemas": defs,
        "securitySchemes": {
            auth.SCHEME: {"type": "http", "scheme": "bearer", "description": auth.DESCRIPTION}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kodo",
            "version": kodo.__version__,
            "description": "Errors are JSON `ErrorBody`. Wrong methods are 404 `not found` (no 405). "
            "Strings hold no NUL or unpaired surrogate. " + auth.DESCRIPTION,
        },
        "paths": paths,
        "components": components,
    }


@bp.get("/openapi.json")
@operation("This document", {200: OpenApiDocument}, tags=("meta",))
def openapi_json() -> Response:
    from kodo.api.intents import service

    return json_response(document(policy=service().run_policy_schema()))
