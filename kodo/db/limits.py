"""Queue limits in Postgres (`dbos.queue_limits`, `dbos.queue_partition_limits`): the environment's
defaults, an operator's changes (`kodo queue set`, the admin port's `PUT /queues/<q>/limits`), and
what they look like with their use (`kodo queue show`). Admission itself is `dbos.kodo_admit`
(migration 0010), called through the store port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kodo.config import QueueLimits, Rate
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import ValidationError
from kodo.queues import WORKER_QUEUES

# The fields an operator may set, for a queue and for one of its partitions.
QUEUE_FIELDS = (
    "concurrency",
    "worker_concurrency",
    "rate",
    "partition_concurrency",
    "partition_worker_concurrency",
    "partition_rate",
    "priority",
)
PARTITION_FIELDS = ("concurrency", "worker_concurrency", "rate", "weight")
_RATE = re.compile(r"^(\d+)/(\d+)(s?)$")
_CAN_BE_ZERO = ("concurrency", "partition_concurrency")  # 0 pauses admission


def _row(limits: QueueLimits) -> dict[str, Any]:
    def rate(r: Rate | None) -> tuple[int | None, int | None]:
        return (None, None) if r is None else (r.limit, r.period_ms)

    rl, rp = rate(limits.rate)
    prl, prp = rate(limits.partition_rate)
    return {
        "concurrency": limits.concurrency,
        "worker_concurrency": limits.worker_concurrency,
        "rate_limit": rl,
        "rate_period_ms": rp,
        "partition_concurrency": limits.partition_concurrency,
        "partition_worker_concurrency": limits.partition_worker_concurrency,
        "partition_rate_limit": prl,
        "partition_rate_period_ms": prp,
        "priority_enabled": limits.priority_enabled,
    }


def write_env(conn: Conn, limits: Mapping[str, QueueLimits], now: int) -> None:
    """The environment's defaults; a queue an operator has set keeps its own."""
    for queue, lim in sorted(limits.items()):
        if lim.limited:
            conn.execute(Q["put_queue_limits"], {"queue": queue, "now": now, "source": "env", **_row(lim)})
        else:
            conn.execute(Q["delete_env_limits"], {"queue": queue})


@dataclass(frozen=True)
class Change:
    """What an operator sets: field -> value (None clears the limit)."""

    values: dict[str, Any]


def parse_change(raw: Mapping[str, Any], *, partition: bool) -> Change:
    """Validate a change (the admin port's JSON body, or the CLI's flags as strings).

    Limits are whole numbers >= 1 (a concurrency may be 0: admission paused) or null/"none" to
    clear; a rate is "N/S" (N admissions per S seconds); priority is a boolean; weight >= 1."""
    allowed = PARTITION_FIELDS if partition else QUEUE_FIELDS
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown limit {unknown[0]!r} (allowed: {', '.join(allowed)})")
    if not raw:
        raise ValidationError(f"nothing to set (give one of: {', '.join(allowed)})")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "priority":
            out[name] = _bool(name, value)
        elif name in ("rate", "partition_rate"):
            out[name] = _rate(name, value)
        elif name == "weight":
            out[name] = _int(name, value, minimum=1, clearable=False)
        else:
            out[name] = _int(name, value, minimum=0 if name in _CAN_BE_ZERO else 1, clearable=True)
    return Change(out)


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


def _int(name: str, value: Any, *, minimum: int, clearable: bool) -> int | None:
    if clearable and _is_none(value):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = " or none" if clearable else ""
        raise ValidationError(f"invalid {name}: {value!r} (a whole number >= {minimum}{hint})")
    return value


def _rate(name: str, value: Any) -> Rate | None:
    if _is_none(value):
        return None
    match = _RATE.match(value.strip()) if isinstance(value, str) else None
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValidationError(
            f"invalid {name}: {value!r} (N/SECONDS, e.g. 100/60, N and SECONDS >= 1, or none)"
        )
    return Rate(int(match.group(1)), int(match.group(2)) * 1000)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "on", "false", "0", "off"):
        return value.strip().lower() in ("true", "1", "on")
    raise ValidationError(f"invalid {name}: {value!r} (true/false, on/off)")


def check_queue(queue: str) -> None:
    if queue not in WORKER_QUEUES:
        raise ValidationError(f"unknown queue {queue!r} (one of: {', '.join(WORKER_QUEUES)})")


def set_queue(conn: Conn, queue: str, change: Change, default: QueueLimits, now: int) -> None:
    """Merge an operator's change into the queue's limits (from its row, or the environment's
    defaults when it has none) and pin them as the operator's. Run in a transaction."""
    check_queue(queue)
    row = conn.execute(Q["get_queue_limits"], {"queue": queue}).fetchone()
    current = dict(row) if row is not None else _row(default)
    was_limited = row is not None
    for name, value in change.values.items():
        if name == "priority":
            current["priority_enabled"] = value
        elif name in ("rate", "partition_rate"):
            current[f"{name}_limit"], current[f"{name}_period_ms"] = (
                (None, None) if value is None else (value.limit, value.period_ms)
            )
        else:
            current[name] = value
    params = {k: current[k] for k in _row(default)}
    conn.execute(Q["put_queue_limits"], {"queue": queue, "now": now, "source": "operator", **params})
    if not was_limited:
        conn.execute(Q["take_running_slots"], {"queue": queue, "now": now})


def set_partition(
    conn: Conn, queue: str, partition: str, change: Change, default: QueueLimits, now: int
) -> None:
    """An operator's override for one partition; the queue is pinned as the operator's too (an
    override only acts on a limited queue)."""
    check_queue(queue)
    if conn.execute(Q["get_queue_limits"], {"queue": queue}).fetchone() is None:
        set_queue(conn, queue, Change({"priority": default.priority_enabled}), default, now)
    row = conn.execute(Q["get_partition_limits"], {"queue": queue, "partition": partition}).fetchone()
    current: dict[str, Any] = (
        dict(row)
        if row is not None
        else {
            "concurrency": None,
            "worker_concurrency": None,
            "rate_limit": None,
            "rate_period_ms": None,
            "weight": 1,
        }
    )
    for name, value in change.values.items():
        if name == "rate":
            current["rate_limit"], current["rate_period_ms"] = (
                (None, None) if value is None else (value.limit, value.period_ms)
            )
        else:
            current[name] = value
    keys = ("concurrency", "worker_concurrency", "rate_limit", "rate_period_ms", "weight")
    conn.execute(
        Q["put_partition_limits"],
        {"queue": queue, "partition": partition, "now": now, **{k: current[k] for k in keys}},
    )


def reset(conn: Conn, queue: str, partition: str | None, default: QueueLimits, now: int) -> None:
    """Drop an operator's partition override, or all of a queue's (back to the environment's)."""
    check_queue(queue)
    if partition is not None:
        conn.execute(Q["delete_partition_limits"], {"queue": queue, "partition": partition})
        return
    conn.execute(Q["delete_queue_overrides"], {"queue": queue})
    write_env(conn, {queue: default}, now)


def _rate_text(limit: int | None, period_ms: int | None) -> str | None:
    return None if limit is None or period_ms is None else str(Rate(limit, period_ms))


def show(conn: Conn, now: int) -> list[dict[str, Any]]:
    """Every limited queue: its limits, source, use (slots held, waiting, admitted in the window),
    and its partitions (overrides, and those with work)."""
    out = []
    for r in conn.execute(Q["show_queue_limits"], {"now": now}).fetchall():
        parts = conn.execute(Q["show_partition_limits"], {"queue": r["queue_name"]}).fetchall()
        out.append(
            {
                "queue": r["queue_name"],
                "source": r["source"],
                "concurrency": r["concurrency"],
                "workerConcurrency": r["worker_concurrency"],
                "rate": _rate_text(r["rate_limit"], r["rate_period_ms"]),
                "partitionConcurrency": r["partition_concurrency"],
                "partitionWorkerConcurrency": r["partition_worker_concurrency"],
                "partitionRate": _rate_text(r["partition_rate_limit"], r["partition_rate_period_ms"]),
                "priorityEnabled": r["priority_enabled"],
                "running": r["running"],
                "waiting": r["waiting"],
                "admittedInWindow": r["admitted_in_window"],
                "partitions": [
                    {
                        "partition": p["partition_key"],
                        "concurrency": p["concurrency"],
                        "workerConcurrency": p["worker_concurrency"],
                        "rate": _rate_text(p["rate_limit"], p["rate_period_ms"]),
                        "weight": p["weight"],
                        "running": p["running"],
                        "waiting": p["waiting"],
                    }
                    for p in parts
                ],
            }
        )
    return out
