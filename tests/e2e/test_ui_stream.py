"""The run page follows the run stream and resumes it after a network blip without missing or
repeating an event (issue 11), in a real browser (Debian's headless chromium driven by Playwright).

The API runs with KODO_STREAM_MAX_S=1: the server closes the stream every second and EventSource
reconnects by itself with Last-Event-ID, many times during one run (an "ask" run, so its events come
in three bursts: to the ask gate, to the plan gate, to the end). On top of that the page is cut off
three ways: one stream request answered 503 (EventSource gives up; app.js connects again with
`?lastEventId=`), the whole browser offline while the run moves on to the plan gate, and the stream
requests reset while the run finishes after the "Approve Plan" click. Each time the test checks that
no event got through the cut, and that the page catches up afterwards.

What the page received (`window.kodoStream`, kept by app.js: each event's id and type, each state of
the live indicator) must equal the server's whole stream read in one go afterwards: the same events in
the same order, none twice, ending with `end` (a connection that did not resume from the last id
would repeat events); the indicator showed "reconnecting" and ends "ended"; the sandbox output on the
page is exactly the stream's output events, each once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Browser, Route, expect

from tests.e2e.live import LiveSystem, SystemFactory

UI_WAIT_MS = 20_000
STREAM_URL = "**/api/runs/*/stream*"

Event = dict[str, Any]


def _events(text: str) -> list[Event]:
    """The events of an SSE body (comments and the `retry:` line skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if line and not line.startswith((":", "retry:"))
        )
        if fields:
            out.append({"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])})
    return out


def _server_stream(sut: LiveSystem, wid: str) -> list[Event]:
    """The run's whole stream, read from the start in one request (the run is terminal: it ends)."""
    r = sut.http.get(f"{sut.base}/api/runs/{wid}/stream", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    return _events(r.text)


def _output_text(events: list[Event]) -> str:
    """The sandbox output the page shows for these events (app.js's onOutput)."""
    text = ""
    for e in events:
        if e["event"] != "output":
            continue
        d = e["data"]
        tag = f"[{str(d.get('taskKey') or '')[:8]} {d['kind']}] "
        text += tag + "end of output\n" if d["kind"] == "stream_closed" else tag + (d.get("chunk") or "")
    return text


def _position(event_id: str) -> tuple[int, int]:
    tx, seq = event_id.split("-")
    return int(tx), int(seq)


class RunPage:
    """The run page of one run in a browser context of its own, its stream requests recorded and
    their blips under the test's control: mode "pass" lets a request through, "abort" resets it (a
    network error: EventSource retries by itself with Last-Event-ID), "fail" answers the next one
    503 (EventSource closes; app.js connects again with ?lastEventId=) and passes the ones after."""

    def __init__(self, browser: Browser, sut: LiveSystem, wid: str) -> None:
        self.sut = sut
        self.ctx = browser.new_context(base_url=sut.base, viewport={"width": 1280, "height": 900})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.asked: list[str] = []  # the stream requests' URLs, in order
        self.mode = "pass"
        self.aborted = self.failed = 0
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", lambda req: self.asked.append(req.url) if "/stream" in req.url else None)
        self.page.route(STREAM_URL, self._route)
        self.page.goto(f"/?wid={wid}")
        self.live = self.page.locator("#live")

    def _route(self, route: Route) -> None:
        if self.mode == "abort":
            self.aborted += 1
            route.abort("connectionreset")
        elif self.mode == "fail":
            self.mode = "pass"
            self.failed += 1
            route.fulfill(status=503, content_type="application/json", body='{"error":"blip"}')
        else:
            route.continue_()

    def seen(self) -> Any:
        """What the page got from the stream (app.js's `window.kodoStream`)."""
        return self.page.evaluate("window.kodoStream")

    def events(self) -> int:
        return len(self.seen()["events"])

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {what} after {timeout}s; the page got {self.seen()}\n{self.sut.logs()}"
                )
            self.page.wait_for_timeout(100)

    def close(self) -> None:
        self.ctx.close()


def _follow(ui: RunPage, run_id: str) -> None:
    """An operator's page on the run from its ask gate to its end, through reconnects and blips."""
    sut, page, live = ui.sut, ui.page, ui.live
    expect(page.locator("#answer-text")).to_be_visible(timeout=UI_WAIT_MS)
    # The server closes the stream every second: the page reconnects, again and again.
    expect(live).to_have_text("reconnecting", timeout=5_000)
    ui.wait(lambda: len(ui.asked) >= 3, "three stream connections")
    expect(live).to_have_text("live", timeout=5_000)

    # One connection refused (503): app.js connects again from the last id it got.
    ui.mode = "fail"
    ui.wait(lambda: any("lastEventId=" in url for url in ui.asked), "a reconnect with ?lastEventId")
    expect(live).to_have_text("live", timeout=5_000)

    # The network goes away (an open connection lives on until the server closes it: two seconds
    # later the page has none) while the run moves on to the plan gate (the answer posted by another
    # client), and comes back: the page catches up.
    before = ui.events()
    ui.ctx.set_offline(True)
    page.wait_for_timeout(2_000)
    expect(live).to_have_text("reconnecting")
    r = sut.post(f"/runs/{run_id}/events", {"type": "input", "payload": {"answer": "yes"}})
    assert r.status_code == 202, r.text
    sut.wait_view(run_id, lambda v: v.get("nextAction") == "APPROVE_PLAN", "the plan gate")
    page.wait_for_timeout(1_200)
    assert ui.events() == before, "events reached the page while it was offline"
    ui.ctx.set_offline(False)
    approve = page.locator("button#approve")
    expect(approve).to_be_visible(timeout=UI_WAIT_MS)
    ui.wait(lambda: ui.events() > before, "the events of the blip")
    # Two more connections closed by the server, resuming after the newer events.
    n = len(ui.asked)
    ui.wait(lambda: len(ui.asked) >= n + 2, "two more stream connections")

    # The stream is cut (its connections reset, once the open one is closed) while the run finishes
    # after the approval click; then it comes back.
    ui.mode = "abort"
    ui.wait(lambda: ui.aborted >= 1, "an aborted stream connection")
    before = ui.events()
    page.fill("#approved-by", "ui-stream")
    approve.click()
    expect(page.locator("#action-msg .flash.ok")).to_contain_text("approved at ")
    sut.wait_status(run_id, "succeeded")
    page.wait_for_timeout(1_200)
    assert ui.events() == before, "events reached the page through a cut stream"
    ui.mode = "pass"

    expect(live).to_have_text("ended", timeout=UI_WAIT_MS)
    expect(page.locator("#run-status [data-status='succeeded']")).to_be_visible(timeout=5_000)


def test_run_page_follows_the_stream_across_reconnects_and_blips(
    browser: Browser, make_system: SystemFactory
) -> None:
    sut = make_system("stream1s", KODO_STREAM_MAX_S="1").start()
    # An ask run: it waits for an answer, then at the plan gate; three bursts of events in all.
    intent = sut.new_intent({"goal": "ui stream resume", "inputs": {}, "constraints": {"askUser": True}})
    run_id = sut.start_run(intent, {"queuePartitionKey": "ui-stream"})
    ui = RunPage(browser, sut, intent)
    try:
        _follow(ui, run_id)
        got = ui.seen()
        shown = ui.page.locator("#live-output").text_content() or ""
    finally:
        ui.close()
    assert ui.errors == [], f"JavaScript errors on the page: {ui.errors}"
    assert (ui.failed, ui.aborted >= 1) == (1, True), (ui.failed, ui.aborted)

    server = _server_stream(sut, intent)
    want = [(e["id"], e["event"]) for e in server]
    have = [(e["id"], e["event"]) for e in got["events"]]
    assert got["wid"] == intent
    # Every event once, in the server's order, ending with `end` (whose id is the last event's).
    assert have == want, f"page {have}\nserver {want}"
    assert len(set(have)) == len(have)
    assert want[-1] == (want[-2][0], "end") and server[-1]["data"] == {"status": "succeeded"}
    positions = [_position(i) for i, _ in want[:-1]]
    assert positions == sorted(set(positions))
    statuses = [e["data"]["status"] for e in server if e["event"] == "status"]
    assert statuses.count("waiting_input") == 2 and statuses[-1] == "succeeded", statuses
    steps = [e["data"]["stepId"] for e in server if e["event"] == "step"]
    assert steps == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"], steps

    # The indicator went through "reconnecting" many times and ended "ended".
    assert got["live"][0] == "connecting" and got["live"][-1] == "ended", got["live"]
    assert got["live"].count("reconnecting") >= 4, got["live"]
    # Many connections: the first from the start, app.js's own one from its last id.
    assert len(ui.asked) >= 7, ui.asked
    assert "lastEventId=" not in ui.asked[0], ui.asked

    # The sandbox output on the page: exactly the stream's output events, each once.
    assert "output" in {e["event"] for e in server}
    assert shown == _output_text(server), f"page:\n{shown}\nserver:\n{_output_text(server)}"
    closed = [line for line in shown.splitlines() if line.endswith("end of output")]
    assert closed and len(closed) == len(set(closed)), closed
