"""Body parsing (§1.2) and validation against the request models, with the contract's 400 bodies.

The models live in the intent layer (`kodo.intent.requests`); this module is the HTTP side of them:
`parse_json_body` reads a raw body as JSON, and `validate` checks it against a model. A failure is a
`SchemaError` with the message `invalid <Schema>: <reasons>` and Ajv-style reasons
(`data must have required property 'goal'`, `data/limit must be >= 1`) and `details` items
`{instancePath, schemaPath, keyword, params, message}`; `kodo.api.errors` turns it into the 400.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from kodo.errors import SchemaError, ValidationError
from kodo.intent.requests import BAD_TEXT_MESSAGE, BAD_TEXT_TYPE, find_bad_text

__all__ = ["INVALID_PARAM", "check_params", "check_text", "parse_json_body", "validate"]

_BAD_CHAR = re.compile("[\\x00\\ud800-\\udfff]")
INVALID_PARAM = "invalid request parameter: " + BAD_TEXT_MESSAGE

T = TypeVar("T", bound=BaseModel)


# --- body parsing (§1.2) -----------------------------------------------------------------------


def parse_json_body(raw: bytes, *, empty_as_object: bool = True) -> object:
    """Parse a request body as JSON text, ignoring the content-type.

    An empty body is `{}`. With `empty_as_object` (the default) a whitespace-only body is `{}` too;
    without it, only the empty string is, and whitespace fails as malformed JSON.
    Malformed JSON raises a ValidationError `invalid json` (a 400 without `details`).
    """
    if raw == b"" or (empty_as_object and raw.strip() == b""):
        return {}
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError("invalid json") from exc


def _reject_constant(name: str) -> object:
    # NaN / Infinity / -Infinity are not JSON.
    raise ValueError(f"invalid JSON constant: {name}")


def _finite_float(text: str) -> float:
    # `1e999` would be inf (stored as `Infinity`): a number JSON text cannot carry back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def check_params(*mappings: Mapping[str, Any] | None) -> None:
    """Path ids and query values hold no NUL or lone surrogate (Postgres refuses NUL): 400 otherwise.

    Run once per request (a `before_request` hook), so no route reaches the database with one.
    """
    for mapping in mappings:
        if mapping and find_bad_text(dict(mapping)) is not None:
            raise ValidationError(INVALID_PARAM)


# --- validation (§1.3, §1.4) -------------------------------------------------------------------


def validate(model: type[T], data: object, schema_name: str) -> T:
    """Validate parsed JSON against `model`, or raise the contract's V error (a SchemaError).

    Any string (value or key) holding NUL or a lone surrogate fails first, whatever the model.
    """
    check_text(data, schema_name)
    try:
        return model.model_validate(data, strict=True)
    except PydanticValidationError as exc:
        details = [_to_detail(err) for err in exc.errors(include_url=False)]
        reasons = "; ".join(_data_path(d["instancePath"]) + " " + d["message"] for d in details)
        raise SchemaError(f"invalid {schema_name}: {reasons}", details=details) from None


_TYPE_NAMES: dict[str, str] = {
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "string_type": "string",
    "string_unicode": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
    "none_type": "null",
}


def _data_path(instance_path: str) -> str:
    return "data" + instance_path


def _pointer(parts: Sequence[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _schema_path(parts: Sequence[str | int]) -> str:
    segs: list[str] = ["#"]
    for p in parts:
        segs.append("items" if isinstance(p, int) else f"properties/{p}")
    return "/".join(segs)


def check_text(data: object, schema_name: str) -> None:
    """The V error for the first string (value or key) in `data` holding NUL or a lone surrogate."""
    bad = find_bad_text(data)
    if bad is not None:
        # A bad object key is part of the path: shown escaped (`\u0000`), never echoed raw.
        loc = [
            _BAD_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", p) if isinstance(p, str) else p for p in bad
        ]
        detail = _detail(loc, BAD_TEXT_TYPE, {}, BAD_TEXT_MESSAGE)
        path = _data_path(detail["instancePath"])
        raise SchemaError(f"invalid {schema_name}: {path} {BAD_TEXT_MESSAGE}", details=[detail])


def _to_detail(err: Mapping[str, Any]) -> dict[str, Any]:
    kind: str = err["type"]
    loc: list[str | int] = list(err["loc"])
    ctx: Mapping[str, Any] = err.get("ctx") or {}

    if kind == "missing":
        parent, name = loc[:-1], str(loc[-1])
        return _detail(parent, "required", {"missingProperty": name}, f"must have required property '{name}'")
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        return _detail(
            parent,
            "additionalProperties",
            {"additionalProperty": name},
            "must NOT have additional properties",
        )
    if kind in _TYPE_NAMES:
        type_name = _TYPE_NAMES[kind]
        return _detail(loc, "type", {"type": type_name}, f"must be {type_name}")
    if kind == "string_too_short":
        limit = ctx.get("min_length", 0)
        return _detail(loc, "minLength", {"limit": limit}, f"must NOT have fewer than {limit} characters")
    if kind == "string_too_long":
        limit = ctx.get("max_length", 0)
        return _detail(loc, "maxLength", {"limit": limit}, f"must NOT have more than {limit} characters")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        comparison, key = {
            "greater_than_equal": (">=", "ge"),
            "greater_than": (">", "gt"),
            "less_than_equal": ("<=", "le"),
            "less_than": ("<", "lt"),
        }[kind]
        keyword = {">=": "minimum", ">": "exclusiveMinimum", "<=": "maximum", "<": "exclusiveMaximum"}[
            comparison
        ]
        limit = ctx.get(key)
        return _detail(
            loc, keyword, {"comparison": comparison, "limit": limit}, f"must be {comparison} {limit}"
        )
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return _detail(loc, "pattern", {"pattern": pattern}, f'must match pattern "{pattern}"')
    if kind == "literal_error":
        allowed = _allowed_values(ctx.get("expected", ""))
        return _detail(loc, "enum", {"allowedValues": allowed}, "must be equal to one of the allowed values")
    # Anything else: keep pydantic's type and message so nothing is lost.
    return _detail(loc, kind, dict(ctx) if ctx else {}, str(err.get("msg", kind)))


def _allowed_values(expected: object) -> list[str]:
    # pydantic renders the literal choices as "'a', 'b' or 'c'".
    text = str(expected).replace(" or ", ", ")
    return [v.strip().strip("'\"") for v in text.split(",") if v.strip()]


def _detail(loc: Sequence[str | int], keyword: str, params: dict[str, Any], message: str) -> dict[str, Any]:
    schema_path = _schema_path(loc) + "/" + keyword
    return {
        "instancePath": _pointer(loc),
        "schemaPath": schema_path,
        "keyword": keyword,
        "params": _jsonable(params),
        "message": message,
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
