"""JSON encoding of workflow inputs, outputs and errors as stored in the dbos tables."""

from __future__ import annotations

import importlib
import json
from typing import Any

from kodo.errors import RecordedStepError


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def encode_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return dumps({"args": list(args), "kwargs": kwargs})


def decode_inputs(text: str) -> tuple[list[Any], dict[str, Any]]:
    data = json.loads(text)
    return list(data.get("args", [])), dict(data.get("kwargs", {}))


def encode_error(exc: BaseException) -> str:
    cls = type(exc)
    args: list[Any] = []
    for arg in exc.args:
        try:
            json.dumps(arg)
            args.append(arg)
        except (TypeError, ValueError):
            args.append(str(arg))
    return dumps({"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc), "args": args})


def decode_error(text: str) -> BaseException:
    """Rebuild a recorded exception (same class when importable), for deterministic replay."""
    data = json.loads(text)
    type_name = str(data.get("type", "Exception"))
    message = str(data.get("message", ""))
    module_name, _, qualname = type_name.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, type) and issubclass(obj, Exception):
            return obj(*data.get("args", [message]))
    except Exception:
        pass
    return RecordedStepError(type_name, message)


def error_message(text: str | None) -> str | None:
    if text is None:
        return None
    data = json.loads(text)
    return f"{data.get('type', 'Exception')}: {data.get('message', '')}"
