"""Artifacts of a run: URIs, inline wrappers, hashes and exactly-once inserts (contract-internals §5).

Every artifact has a URI `artifact://run/<run>/step/<step>/task/<taskKey>/<name>` (an empty task
key gives `task//`) and a sha256 of its *content* (a string raw, an object canonical), not of the
stored inline wrapper. The slot `(run, step, task_key, idx, attempt)` is written once; writing a
different artifact into a filled slot is a divergence and an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.intent.canonical import sha256_hex

SENTINEL_IDX = 999
NONE_SHA256 = sha256_hex("none")
INDEX_CREATED_AT = "1970-01-01T00:00:00.000Z"  # fixed, so the index hash is deterministic


class ArtifactDivergenceError(Exception):
    """A filled artifact slot was written again with a different URI or hash."""


def uri(run_id: str, step_id: str, name: str, task_key: str = "") -> str:
    return f"artifact://run/{run_id}/step/{step_id}/task/{task_key}/{name}"


@dataclass(frozen=True)
class Artifact:
    kind: str
    name: str
    inline: Any
    sha256: str


def put(
    c: Conn, run_id: str, step_id: str, idx: int, art: Artifact, *, attempt: int, task_key: str = ""
) -> str:
    """Insert one artifact; a repeat of the same artifact is a no-op. Returns its URI."""
    return put_many(c, run_id, step_id, [(idx, art)], attempt=attempt, task_key=task_key)[0]


def put_many(
    c: Conn,
    run_id: str,
    step_id: str,
    items: list[tuple[int, Artifact]],
    *,
    attempt: int,
    task_key: str = "",
) -> list[str]:
    """Insert artifacts `(idx, artifact)` of one step attempt in one statement; a repeat of the same
    artifact is a no-op, a different one in a taken slot raises ArtifactDivergenceError. Their URIs."""
    refs = [uri(run_id, step_id, art.name, task_key) for _, art in items]
    slot = {"run_id": run_id, "step_id": step_id, "task_key": task_key, "attempt": attempt}
    rows = c.execute(
        Q["insert_artifacts"],
        {
            **slot,
            "idx": [idx for idx, _ in items],
            "kind": [art.kind for _, art in items],
            "uri": refs,
            "inline": [Jsonb(art.inline) for _, art in items],
            "sha256": [art.sha256 for _, art in items],
        },
    ).fetchall()
    inserted = {int(r["idx"]) for r in rows}
    for (idx, art), ref in zip(items, refs, strict=True):
        if idx in inserted:
            continue
        existing = c.execute(Q["get_artifact_slot"], {**slot, "idx": idx}).fetchone()
        if existing is not None and (existing["uri"] != ref or existing["sha256"] != art.sha256):
            raise ArtifactDivergenceError(
                f"Artifact divergence at {run_id}/{step_id}/{task_key}/{idx}/{attempt}"
            )
    return refs


def ensure_sentinel(c: Conn, run_id: str, step_id: str, attempt: int, *, wrote: int) -> None:
    """A step that wrote no artifact for this attempt (`wrote`, counted by the step: a step attempt
    is new in its own transaction, so nothing else wrote under it) gets the `none` sentinel (idx 999)."""
    if wrote == 0:
        sentinel = Artifact("none", "none", {"status": "no_artifacts"}, NONE_SHA256)
        put(c, run_id, step_id, SENTINEL_IDX, sentinel, attempt=attempt)


def sandbox_set(
    c: Conn,
    run_id: str,
    task_key: str,
    attempt: int,
    result: dict[str, Any],
    provider: str,
    *,
    step: str = "ExecuteST",
) -> str:
    """The per-task artifact set of one sandbox attempt; returns the index URI (idx 0).

    Entries (files, timings, raw, stderr, stdout) take idx 1.. in URI order, then the
    `artifact_index` at idx 0 lists them. The time primitives write the same set under their own
    `step` (`sleep-before-sleep`, `sleep-after-sleep`, `ScheduledTick`) with task key ''.
    """
    entries = [
        Artifact("file", f"files/{f['path']}", {"text": f.get("inline", "")}, f["sha256"])
        for f in result.get("filesOut", [])
    ]
    raw = result.get("raw") or {}
    entries += [
        Artifact("timings", "metrics.json", {"json": result["metrics"]}, sha256_hex(result["metrics"])),
        Artifact("raw", "raw.json", {"json": raw}, sha256_hex(raw)),
        Artifact("stderr", "stderr.log", {"text": result["stderr"]}, sha256_hex(result["stderr"])),
        Artifact("stdout", "stdout.log", {"text": result["stdout"]}, sha256_hex(result["stdout"])),
    ]
    entries.sort(key=lambda a: uri(run_id, step, a.name, task_key))
    items = [
        {"kind": a.kind, "uri": uri(run_id, step, a.name, task_key), "sha256": a.sha256} for a in entries
    ]
    index = {
        "taskKey": task_key,
        "provider": raw.get("provider", provider),
        "items": items,
        "rawRef": uri(run_id, step, "raw.json", task_key),
        "createdAt": INDEX_CREATED_AT,
    }
    index_art = Artifact("artifact_index", "index.json", {"json": index}, sha256_hex(index))
    numbered = [(0, index_art), *enumerate(entries, start=1)]
    return put_many(c, run_id, step, numbered, attempt=attempt, task_key=task_key)[0]
