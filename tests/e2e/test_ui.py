"""The operator web UI (issue 11) in a real browser: Debian's headless chromium driven by Playwright.

Against the live system (API, workers, reconciler as processes; OC_MODE=replay SBX_MODE=mock), each
test works the page the way an operator would and checks the outcome through the API and SQL too:

* start a run from the form, approve it from the "Approve Plan" button, watch the timeline reach
  `succeeded` (an SVG bar per product step and per sandbox task, in time order), open artifacts from
  the artifact sheet and see their content; the run page is saved as a screenshot
  (`.tmp/ui-screenshots/run-page.png`; `REFRESH_UI_SCREENSHOT=1` also refreshes docs/ui-run-page.png);
* an "ask" run: the answer box posts the event, the run moves on to the plan gate;
* a "fail me" run: the Retry button starts the repair (retryCount 1);
* the ops board: cancel and resume a slow workflow (POST /slowstep) with actor and reason (audited),
  its queue depth while it sleeps, then fork it.

The browser is the system's (`/usr/bin/chromium`, installed by ops/lib.sh's bootstrap); Playwright
never downloads one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.live import STEPS, LiveSystem, SystemFactory

REPO = Path(__file__).resolve().parents[2]
SHOT_DIR = REPO / ".tmp" / "ui-screenshots"
DOC_SHOT = REPO / "docs" / "ui-run-page.png"
UI_WAIT_MS = 20_000
TOKEN = "ui-e2e-token-0123456789"


@pytest.fixture
def page(browser: Browser, live_system: LiveSystem) -> Iterator[Page]:
    ctx = browser.new_context(base_url=live_system.base, viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        ctx.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _until(cond: Callable[[], bool], what: str, sut: LiveSystem, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s\n{sut.logs()}")
        time.sleep(0.1)


def _wid_of(page: Page) -> str:
    query = page.url.split("?", 1)[1]
    assert query.startswith("wid="), page.url
    return query.removeprefix("wid=")


def _status(page: Page, status: str, timeout: int = UI_WAIT_MS) -> None:
    expect(page.locator(f"#run-status [data-status='{status}']")).to_be_visible(timeout=timeout)


def _has_stream(sut: LiveSystem, wid: str) -> bool:
    """Whether the API serves the run's event stream (GET /api/runs/:wid/stream)."""
    with sut.http.get(f"{sut.base}/api/runs/{wid}/stream", stream=True, timeout=5) as r:
        return r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


def _bars(page: Page) -> list[dict[str, Any]]:
    """Every bar of the timeline at one moment (the chart is redrawn on each update)."""
    bars: list[dict[str, Any]] = page.eval_on_selector_all(
        "svg#timeline rect.bar",
        """rects => rects.map(r => ({
            cls: r.getAttribute("class"), step: r.dataset.step || null, task: r.dataset.task || null,
            x: parseFloat(r.getAttribute("x")), width: parseFloat(r.getAttribute("width"))}))""",
    )
    return bars


def test_start_approve_timeline_artifacts(page: Page, live_system: LiveSystem) -> None:
    sut = live_system
    goal = f"ui golden path {uuid.uuid4().hex[:6]}"
    page.goto("/")
    page.fill("#goal", goal)
    page.fill("#partition", "ui-tenant")
    page.click("#start-run")
    page.wait_for_url("**/?wid=*")
    wid = _wid_of(page)
    run = sut.view(wid)
    assert run["workflowId"] == wid
    assert sut.scalar("SELECT goal FROM app.intents WHERE id = %s", (wid,)) == goal
    assert (
        sut.scalar("SELECT queue_partition_key FROM app.runs WHERE workflow_id = %s", (wid,)) == "ui-tenant"
    )

    # The plan gate: the button appears with nextAction APPROVE_PLAN, the chart shows DecideST pending.
    approve = page.locator("button#approve")
    expect(approve).to_be_visible(timeout=UI_WAIT_MS)
    _status(page, "waiting_input")
    expect(page.locator("#run-next-action")).to_have_text("APPROVE_PLAN")
    assert sut.view(wid)["nextAction"] == "APPROVE_PLAN"
    expect(page.locator("svg#timeline rect.bar.pending[data-step='DecideST']")).to_have_count(1)
    expect(page.locator("svg#timeline .pending-label")).to_have_text("waiting for plan approval")
    # Live updates: the run's event stream when the API serves it (else polling; see the ask test).
    expect(page.locator("#live")).to_have_text("live" if _has_stream(sut, wid) else "polling")

    page.fill("#approved-by", "ui-e2e")
    approve.click()
    expect(page.locator("#action-msg .flash.ok")).to_contain_text("approved at ")
    sut.wait_status(wid, "succeeded")
    seen = time.monotonic()
    _status(page, "succeeded", timeout=2_000)  # the page follows the run within a second or so
    assert time.monotonic() - seen < 2.0
    assert (
        sut.scalar("SELECT approved_by FROM app.plan_approvals WHERE run_id = %s", (run["runId"],))
        == "ui-e2e"
    )
    expect(page.locator("#run-last-step")).to_have_text("ExecuteST")

    _check_timeline(page, sut, wid)
    _save_screenshot(page)
    _check_artifact_sheet(page, sut, wid, goal)


def _check_timeline(page: Page, sut: LiveSystem, wid: str) -> None:
    """The timeline is a picture: one bar per product step, in order, and two shades per sandbox task."""
    chart = page.locator("svg#timeline")
    expect(chart).to_be_visible()
    for step in STEPS:
        expect(chart.locator(f"rect.bar.step[data-step='{step}']")).to_have_count(1)
    expect(chart.locator("rect.bar.pending")).to_have_count(0)
    bars = _bars(page)
    assert all(b["width"] > 0 for b in bars), bars
    xs = [next(b["x"] for b in bars if b["step"] == s and "step" in b["cls"].split()) for s in STEPS]
    assert xs == sorted(xs), f"step bars out of time order: {xs}"
    children = sut.sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s AND queue_name = 'sbxQ'",
        (wid,),
    )
    assert children, "the run has no sandbox task"
    for child in children:
        task = child["workflow_uuid"]
        expect(chart.locator(f"rect.task-wait[data-task='{task}']")).to_have_count(1)
        expect(chart.locator(f"rect.task-run[data-task='{task}'][data-status='SUCCESS']")).to_have_count(1)
        # The task waited and ran after DecideST started (it is ExecuteST's fan-out).
        wait, run_bar = (
            next(b for b in bars if b["task"] == task and c in b["cls"]) for c in ("wait", "run")
        )
        assert xs[2] <= wait["x"] <= run_bar["x"], (xs, wait, run_bar)


def _shot(page: Page, name: str) -> Path:
    """A screenshot of the whole page, kept as a test artefact under .tmp/ui-screenshots/."""
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SHOT_DIR / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return shot


def _save_screenshot(page: Page) -> None:
    shot = _shot(page, "run-page.png")
    if os.environ.get("REFRESH_UI_SCREENSHOT") == "1" or not DOC_SHOT.exists():
        DOC_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_SHOT)


def _check_artifact_sheet(page: Page, sut: LiveSystem, wid: str, goal: str) -> None:
    """The artifact sheet: kind, URI, sha256, and the content rendered by kind."""
    view = sut.view(wid)
    plan = next(a for a in view["artifacts"] if a["kind"] == "plan_card")
    page.locator("#artifacts li[data-kind='plan_card'] button").click()
    sheet = page.locator("#artifact-sheet")
    expect(sheet).to_be_visible()
    expect(sheet.locator("#artifact-kind")).to_have_text("plan_card")
    expect(sheet.locator("#artifact-sha")).to_have_text(plan["sha256"])
    expect(sheet.get_by_text(plan["uri"], exact=True)).to_be_visible()
    content = sheet.locator("#artifact-content pre[data-type='json']")
    expect(content).to_contain_text(f'"Design for: {goal}"')
    expect(content).to_contain_text('"design": [')  # pretty-printed, not the compact body
    page.click("#close-sheet")
    expect(sheet).to_be_hidden()

    page.locator("#artifacts li[data-kind='stdout'] button").first.click()
    expect(page.locator("#artifact-content pre[data-type='text']")).to_contain_text("OK: pnpm test")


def test_answer_box_on_an_ask_run(page: Page, live_system: LiveSystem) -> None:
    sut = live_system
    # Without the event stream (an API that answers 404 for it) the run page polls every 500 ms.
    page.route("**/api/runs/*/stream*", lambda route: route.fulfill(status=404, json={"error": "not found"}))
    page.goto("/")
    page.fill("#goal", "please ask me first")
    page.fill("#partition", "ui-ask")
    page.check("#ask-user")
    _shot(page, "run-list.png")
    page.click("#start-run")
    page.wait_for_url("**/?wid=*")
    wid = _wid_of(page)

    answer = page.locator("#answer-text")
    expect(answer).to_be_visible(timeout=UI_WAIT_MS)
    expect(page.locator("#live")).to_have_text("polling")
    expect(page.locator("#question")).to_contain_text("What is the answer?")
    _status(page, "waiting_input")
    assert "nextAction" not in sut.view(wid)  # the ask gate, not the plan gate
    expect(page.locator("button#approve")).to_have_count(0)

    answer.fill("forty-two")
    page.click("#answer-send")
    expect(page.locator("#action-msg .flash.ok")).to_have_text("answer sent")
    # The ask gate consumed the event: the run moved on through ApplyPatchST to the plan gate.
    expect(page.locator("button#approve")).to_be_visible(timeout=UI_WAIT_MS)
    expect(page.locator("#run-last-step")).to_have_text("ApplyPatchST")
    assert sut.view(wid)["nextAction"] == "APPROVE_PLAN"
    message = sut.scalar(
        "SELECT message FROM dbos.notifications WHERE destination_uuid = %s AND topic = 'human-event' "
        "ORDER BY created_at_epoch_ms LIMIT 1",
        (wid,),
    )
    assert "forty-two" in str(message)


def test_retry_button_on_a_failed_run(page: Page, live_system: LiveSystem) -> None:
    sut = live_system
    intent = sut.new_intent({"goal": "ui fail me", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent, {"queuePartitionKey": "ui-fail"})
    assert sut.approve(run_id).status_code == 202
    page.goto(f"/?wid={intent}")
    _status(page, "retries_exceeded")
    expect(page.locator("#run-error")).to_contain_text("CMD_NONZERO")
    expect(page.locator("svg#timeline rect.bar.step.failed[data-step='ExecuteST']")).to_have_count(1)
    expect(page.locator("svg#timeline rect.task-run.failed")).to_have_count(1)

    page.click("button#retry")
    expect(page.locator("#action-msg .flash.ok")).to_contain_text("repair started from ExecuteST")
    sut.wait_view(run_id, lambda v: v["retryCount"] == 1 and v["status"] == "retries_exceeded", "the repair")
    _status(page, "retries_exceeded")
    expect(page.locator("button#retry")).to_be_visible(timeout=UI_WAIT_MS)


def _ops_row(page: Page, wid: str) -> Any:
    return page.locator(f"#ops-body tr[data-wid='{wid}']")


def test_ops_board_cancel_resume_fork(page: Page, live_system: LiveSystem) -> None:
    sut = live_system
    wid = f"ui-slow-{uuid.uuid4().hex[:8]}"
    assert sut.post(f"/slowstep?wf={wid}&sleep=5000").status_code == 202
    _until(lambda: sut.get(f"/slowmarks?wf={wid}").json()["s1"] == 1, "s1=1", sut)

    page.goto("/?view=ops")
    # A bearer token saved in the header's field goes with every request (tokens are off here).
    page.fill("#token", "ui-token")
    page.press("#token", "Enter")
    with page.expect_request(lambda req: "/api/ops/wf?" in req.url) as listing:
        pass
    assert listing.value.headers.get("authorization") == "Bearer ui-token"
    page.fill("#ops-actor", "ui-e2e")
    page.fill("#ops-reason", "stalled")
    row = _ops_row(page, wid)
    expect(row).to_have_attribute("data-status", "PENDING", timeout=UI_WAIT_MS)
    # Its durable sleep holds it PENDING on controlQ: the queue depth shows it.
    expect(page.locator("#queue-table tr[data-queue='controlQ'] td.num").nth(1)).not_to_have_text("0")

    _shot(page, "ops-board.png")
    row.locator("button.cancel").click()
    expect(page.locator("#ops-msg .flash.ok")).to_have_text(f"cancel {wid}: accepted")
    expect(_ops_row(page, wid)).to_have_attribute("data-status", "CANCELLED", timeout=UI_WAIT_MS)
    detail = sut.get(f"/api/ops/wf/{wid}").json()
    assert detail["status"] == "CANCELLED"
    assert {k: detail["audit"][0][k] for k in ("op", "actor", "reason")} == {
        "op": "cancel",
        "actor": "ui-e2e",
        "reason": "stalled",
    }
    assert sut.get(f"/slowmarks?wf={wid}").json() == {"s1": 1, "s2": 0}

    # The CANCELLED tab lists it; resume from there.
    page.click("#ops-tabs button[data-status='CANCELLED']")
    expect(_ops_row(page, wid)).to_be_visible(timeout=UI_WAIT_MS)
    expect(page.locator("#ops-body tr[data-status]:not([data-status='CANCELLED'])")).to_have_count(0)
    _ops_row(page, wid).locator("button.resume").click()
    expect(page.locator("#ops-msg .flash.ok")).to_have_text(f"resume {wid}: accepted")
    page.click("#ops-tabs button[data-status='ALL']")
    expect(_ops_row(page, wid)).to_have_attribute("data-status", "SUCCESS", timeout=UI_WAIT_MS)
    assert sut.get(f"/slowmarks?wf={wid}").json() == {"s1": 1, "s2": 1}
    assert [a["op"] for a in sut.get(f"/api/ops/wf/{wid}").json()["audit"]][:2] == ["resume", "cancel"]

    # Fork the finished workflow at stepN 1: a new workflow appears.
    _ops_row(page, wid).locator("input.fork-step").fill("1")
    _ops_row(page, wid).locator("button.fork").click()
    flash = page.locator("#ops-msg .flash.ok")
    expect(flash).to_contain_text(f"fork {wid}: accepted → ")
    forked = flash.inner_text().rsplit("→ ", 1)[1].strip()
    assert forked and forked != wid
    expect(_ops_row(page, forked)).to_be_visible(timeout=UI_WAIT_MS)
    _until(lambda: sut.get(f"/api/ops/wf/{forked}").json()["status"] == "SUCCESS", "the fork's SUCCESS", sut)


def test_bearer_token_and_trace_link(browser: Browser, make_system: SystemFactory) -> None:
    """With KODO_API_TOKENS on, a start without the token is refused on the page; with the token
    saved it goes through. With TRACE_BASE_URL set, the run page links the run's trace."""
    sut = make_system(
        "auth",
        KODO_API_TOKENS=f"ui:{TOKEN}",
        TRACE_BASE_URL="http://traces.example/trace/{traceId}",
    ).start("api")  # the API alone: the run stays queued, which is all this test reads
    ctx = browser.new_context(base_url=sut.base)
    try:
        page = ctx.new_page()
        page.goto("/")
        page.fill("#goal", "ui token check")
        page.fill("#trace-id", "ui-trace-1")
        before = sut.counts("intents", "runs")
        page.click("#start-run")
        expect(page.locator("#start-msg .flash.err")).to_have_text("could not start: unauthorized")
        assert sut.counts("intents", "runs") == before

        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        page.click("#start-run")
        page.wait_for_url("**/?wid=*")
        wid = _wid_of(page)
        _status(page, "queued")
        link = page.locator("#run-summary a.trace")
        expect(link).to_have_attribute("href", "http://traces.example/trace/ui-trace-1")
        assert sut.scalar("SELECT trace_id FROM app.runs WHERE workflow_id = %s", (wid,)) == "ui-trace-1"
    finally:
        ctx.close()
