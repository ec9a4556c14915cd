"""The run stream (`GET /api/runs/:wid/stream`): a run's status changes, product-step completions
and sandbox output, in an order that makes it resumable with nothing missed or repeated.

The events are the run's `dbos.notifications` rows (the runbooks read the same rows): `status` and
`step` written to the run's workflow id in the transaction that made the change, sandbox output to
each task key. An event's id is its row's position `<tx>-<seq>` (the writing transaction's id, then
the row's sequence number). A read takes only rows whose transaction ended before every transaction
still running began (migration 0009), in position order, so no row can later appear behind a
position already served: resuming after the last id seen (`Last-Event-ID`) misses and repeats
nothing. The stream ends once the run is terminal and its terminal status event has been served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.intent import OUTPUT_TOPICS, STATUS_TOPIC, STEP_TOPIC, repair_workflow_id

TOPICS = [STATUS_TOPIC, STEP_TOPIC, *OUTPUT_TOPICS]
TERMINAL_RUN = frozenset({"succeeded", "failed", "canceled", "retries_exceeded"})
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})  # a retries_exceeded run says "failed"
BATCH = 200
EVENT_ID = r"^(\d{1,20})-(\d{1,19})$"
_ID = re.compile(EVENT_ID)

Row = dict[str, Any]


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the stream: after the event with this id."""

    tx: int = 0
    seq: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """`<tx>-<seq>` as the stream gave it (checked by StreamQuery); none is the start."""
        match = _ID.match(text or "")
        return cls(int(match.group(1)), int(match.group(2))) if match else cls()

    def __str__(self) -> str:
        return f"{self.tx}-{self.seq}"


class StreamQuery(BaseModel):
    """`StreamQuery`: where a stream resumes, after the event with this id (`lastEventId`, or the
    `Last-Event-ID` header EventSource sends; the header wins). No other key."""

    model_config = ConfigDict(extra="forbid", strict=True, title="StreamQuery")

    lastEventId: str | None = Field(default=None, pattern=EVENT_ID)  # noqa: N815 (the wire name)


@dataclass(frozen=True)
class Event:
    id: str
    event: str  # status | step | output | end
    data: dict[str, Any]

    def sse(self) -> str:
        """The event in the text/event-stream format."""
        return f"id: {self.id}\nevent: {self.event}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n"


@dataclass
class RunStream:
    """One client's stream of one run (`run`: its app.runs row), from `cursor` on."""

    run: Row
    cursor: Cursor
    ended: bool = False

    def _destinations(self, c: Conn) -> list[str]:
        parents = [self.run["workflow_id"]] + [
            repair_workflow_id(self.run["id"], n) for n in range(1, int(self.run["retry_count"] or 0) + 1)
        ]
        keys = c.execute(Q["stream_task_keys"], {"parents": parents}).fetchall()
        return [self.run["workflow_id"], *(k["task_key"] for k in keys)]

    def poll(self, c: Conn) -> list[Event]:
        """The events after the cursor that are safe to serve (the cursor moves past them), then an
        `end` event once the run is terminal and its terminal status event has been served."""
        status = c.execute(Q["stream_run_status"], {"id": self.run["id"]}).fetchone()
        rows = c.execute(
            Q["stream_events"],
            {
                "destinations": self._destinations(c),
                "topics": TOPICS,
                "tx": str(self.cursor.tx),
                "seq": self.cursor.seq,
                "limit": BATCH,
            },
        ).fetchall()
        events = [self._event(r) for r in rows]
        if rows:
            self.cursor = Cursor(int(rows[-1]["tx"]), int(rows[-1]["seq"]))
        # Terminal when read (before the events): done once its terminal status event is served.
        terminal = status is not None and status["status"] in TERMINAL_RUN
        if terminal and len(rows) < BATCH and self._terminal_served(c):
            assert status is not None
            events.append(Event(str(self.cursor), "end", {"status": status["status"]}))
            self.ended = True
        return events

    def _terminal_served(self, c: Conn) -> bool:
        """The run's latest status event is a terminal one, at or before the cursor."""
        row = c.execute(Q["stream_last_status"], {"workflow_id": self.run["workflow_id"]}).fetchone()
        if row is None:
            return False
        last = Cursor(int(row["tx"]), int(row["seq"]))
        return last <= self.cursor and json.loads(row["message"]).get("status") in TERMINAL_EVENTS

    def _event(self, r: Row) -> Event:
        event_id = f"{r['tx']}-{r['seq']}"
        message = json.loads(r["message"])
        if r["topic"] == STATUS_TOPIC:
            return Event(event_id, "status", {"status": message.get("status")})
        if r["topic"] == STEP_TOPIC:
            return Event(event_id, "step", message)
        return Event(event_id, "output", {"taskKey": r["destination_uuid"], "kind": r["topic"], **message})
