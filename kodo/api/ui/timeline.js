// The run page's timeline: a Gantt chart in SVG, drawn from GET /api/ui/runs/<wid>/timeline.
//
// One row per product step (a bar per attempt, CompileST .. ExecuteST), then one row per fan-out
// sandbox task with two shades: queue wait (enqueued -> first claimed) and run time (claimed ->
// finished). A bar still open ends at the server's `now`; the next step of a live run shows as a
// dashed "pending" bar (waiting for approval, for input, or running). Times are epoch ms.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STEPS = ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"];
  const TERMINAL = new Set(["succeeded", "failed", "canceled", "retries_exceeded"]);
  const TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000,
    120000, 300000, 600000, 1800000, 3600000];
  const LABEL_W = 150;
  const ROW_H = 24;
  const BAR_H = 14;
  const AXIS_H = 22;
  const MIN_BAR_W = 3;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "";
    if (ms < 1000) return Math.max(0, Math.round(ms)) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    const m = Math.floor(ms / 60000);
    return m + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function tickLabel(ms) {
    if (ms === 0) return "0";
    if (ms < 1000) return "+" + ms + "ms";
    if (ms < 60000) return "+" + (ms / 1000) + "s";
    return "+" + (ms / 60000).toFixed(ms % 60000 ? 1 : 0) + "m";
  }

  // The pending bar of a live run: which step comes next, and why it waits.
  function pending(data, run) {
    if (!run || TERMINAL.has(run.status)) return null;
    const done = new Set(data.steps.filter((s) => s.finishedAt !== null).map((s) => s.stepId));
    const next = STEPS.find((s) => !done.has(s));
    if (!next) return null;
    let from = data.createdAt;
    for (const s of data.steps) if (s.finishedAt !== null && s.finishedAt > from) from = s.finishedAt;
    let why = "running";
    if (run.nextAction === "APPROVE_PLAN") why = "waiting for plan approval";
    else if (run.status === "waiting_input") why = "waiting for input";
    else if (run.status === "queued") why = "queued";
    return { stepId: next, from: from, why: why };
  }

  function render(container, data, run) {
    const width = Math.max(480, container.clientWidth || 900);
    const live = pending(data, run);
    const terminal = run ? TERMINAL.has(run.status) : true;
    const t0 = data.createdAt;
    let t1 = t0 + 1;
    const see = (t) => { if (t !== null && t !== undefined && t > t1) t1 = t; };
    for (const s of data.steps) { see(s.startedAt); see(s.finishedAt); }
    for (const t of data.tasks) { see(t.enqueuedAt); see(t.startedAt); see(t.finishedAt); }
    if (!terminal || data.tasks.some((t) => t.finishedAt === null)) see(data.now);
    const span = Math.max(t1 - t0, 50);
    const plotW = width - LABEL_W - 70;
    const x = (t) => LABEL_W + ((t - t0) / span) * plotW;

    const taskRows = data.tasks.length;
    const height = AXIS_H + ROW_H * STEPS.length + (taskRows ? ROW_H : 0) + ROW_H * taskRows + 8;
    const svg = el("svg", {
      id: "timeline", class: "gantt", width: width, height: height,
      viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "run timeline: product steps and sandbox tasks",
    });

    // time axis
    const step = TICKS.find((t) => span / t <= 8) || TICKS[TICKS.length - 1];
    const axis = el("g", { class: "axis" });
    for (let t = 0; t <= span; t += step) {
      const px = x(t0 + t);
      axis.appendChild(el("line", { x1: px, x2: px, y1: AXIS_H - 4, y2: height, class: "grid" }));
      axis.appendChild(el("text", { x: px, y: AXIS_H - 8, class: "tick" }, tickLabel(t)));
    }
    svg.appendChild(axis);

    let y = AXIS_H;
    // product steps
    for (const stepId of STEPS) {
      const attempts = data.steps.filter((s) => s.stepId === stepId);
      const row = el("g", { class: "row step-row", "data-step": stepId });
      row.appendChild(el("rect", { x: 0, y: y, width: width, height: ROW_H, class: "row-bg" }));
      const label = attempts.length > 1 ? stepId + " ×" + attempts.length : stepId;
      row.appendChild(el("text", { x: 8, y: y + ROW_H / 2 + 4, class: "label" }, label));
      if (stepId === "ExecuteST" && data.tasks.length) {
        // ExecuteST's fan-out: from its first task's enqueue to the step's end (or the last task's).
        const from = Math.min(...data.tasks.map((t) => t.enqueuedAt));
        let to = Math.max(...data.tasks.map((t) => (t.finishedAt !== null ? t.finishedAt : data.now)));
        for (const a of attempts) if (a.finishedAt !== null && a.finishedAt > to) to = a.finishedAt;
        const span = el("rect", {
          x: x(from), y: y + (ROW_H - BAR_H) / 2 - 2, width: Math.max(MIN_BAR_W, x(to) - x(from)),
          height: BAR_H + 4, rx: 3, class: "fanout",
        });
        span.appendChild(el("title", {}, "ExecuteST fan-out: " + data.tasks.length + " sandbox task(s), " +
          duration(to - from)));
        row.appendChild(span);
      }
      for (const a of attempts) {
        const start = a.startedAt !== null ? a.startedAt : t0;
        const end = a.finishedAt !== null ? a.finishedAt : data.now;
        const bx = x(start);
        const bw = Math.max(MIN_BAR_W, x(end) - bx);
        const failed = a.errCode && a.errCode !== "NONE";
        const bar = el("rect", {
          x: bx, y: y + (ROW_H - BAR_H) / 2, width: bw, height: BAR_H, rx: 2,
          class: "bar step" + (failed ? " failed" : "") + (a.finishedAt === null ? " open" : ""),
          "data-step": stepId, "data-attempt": a.attempt,
        });
        bar.appendChild(el("title", {}, stepId + " (" + a.phase + ") attempt " + a.attempt + ": " +
          duration(end - start) + (failed ? " — " + a.errCode : "")));
        row.appendChild(bar);
        row.appendChild(el("text", { x: bx + bw + 4, y: y + ROW_H / 2 + 4, class: "dur" },
          (attempts.length > 1 ? "#" + a.attempt + " " : "") + duration(end - start)));
      }
      if (live && live.stepId === stepId) {
        const bx = x(live.from);
        const bw = Math.max(MIN_BAR_W, x(data.now) - bx);
        const bar = el("rect", {
          x: bx, y: y + (ROW_H - BAR_H) / 2, width: bw, height: BAR_H, rx: 2,
          class: "bar pending", "data-step": stepId,
        });
        bar.appendChild(el("title", {}, stepId + ": " + live.why));
        row.appendChild(bar);
        row.appendChild(el("text", { x: Math.min(bx + bw + 4, width - 160), y: y + ROW_H / 2 + 4,
          class: "dur pending-label" }, live.why));
      }
      svg.appendChild(row);
      y += ROW_H;
    }

    // sandbox tasks
    if (taskRows) {
      svg.appendChild(el("text", { x: 8, y: y + ROW_H / 2 + 5, class: "section" },
        "sandbox tasks (" + data.tasks[0].queueName + ")"));
      y += ROW_H;
    }
    for (const t of data.tasks) {
      const row = el("g", { class: "row task-row", "data-task": t.workflowID });
      row.appendChild(el("rect", { x: 0, y: y, width: width, height: ROW_H, class: "row-bg" }));
      const suffix = t.workflowID.length > 64 ? " " + t.workflowID.slice(64, 76) : "";
      row.appendChild(el("text", { x: 16, y: y + ROW_H / 2 + 4, class: "label mono" },
        t.taskKey.slice(0, 10) + "…" + suffix));
      const claimed = t.startedAt !== null ? t.startedAt : (t.finishedAt !== null ? t.finishedAt : data.now);
      const waitX = x(t.enqueuedAt);
      const waitW = Math.max(MIN_BAR_W, x(claimed) - waitX);
      const wait = el("rect", {
        x: waitX, y: y + (ROW_H - BAR_H) / 2, width: waitW, height: BAR_H, rx: 2,
        class: "bar task-wait" + (t.startedAt === null ? " open" : ""), "data-task": t.workflowID,
      });
      wait.appendChild(el("title", {}, "queue wait on " + t.queueName +
        (t.partitionKey ? " / " + t.partitionKey : "") + ": " + duration(claimed - t.enqueuedAt)));
      row.appendChild(wait);
      let lastX = waitX + waitW;
      let label = "wait " + duration(claimed - t.enqueuedAt);
      if (t.startedAt !== null) {
        const end = t.finishedAt !== null ? t.finishedAt : data.now;
        const runX = x(t.startedAt);
        const runW = Math.max(MIN_BAR_W, x(end) - runX);
        // A sandbox that failed its command (CMD_NONZERO, TIMEOUT) still ends its task SUCCESS.
        const failed = (t.finishedAt !== null && t.status !== "SUCCESS") || (t.errCode && t.errCode !== "NONE");
        const cls = failed ? " failed" : (t.finishedAt === null ? " open" : "");
        const bar = el("rect", {
          x: runX, y: y + (ROW_H - BAR_H) / 2, width: runW, height: BAR_H, rx: 2,
          class: "bar task-run" + cls, "data-task": t.workflowID, "data-status": t.status,
        });
        bar.appendChild(el("title", {}, "task " + t.workflowID + " " + t.status + ", " + t.attempts +
          " attempt(s)" + (t.errCode && t.errCode !== "NONE" ? " — " + t.errCode : "") + ": run " +
          duration(end - t.startedAt)));
        row.appendChild(bar);
        lastX = runX + runW;
        label += ", run " + duration(end - t.startedAt) + (t.attempts > 1 ? " (" + t.attempts + " attempts)" : "");
      }
      // The durations go right of the bars, or left of them when the row has no room there.
      const textW = label.length * 6.2;
      const right = lastX + 4 + textW <= width - 4 || waitX - 4 - textW < LABEL_W;
      row.appendChild(el("text", { x: right ? Math.min(lastX + 4, width - textW - 4) : waitX - 4,
        y: y + ROW_H / 2 + 4, class: "dur", "text-anchor": right ? "start" : "end" }, label));
      svg.appendChild(row);
      y += ROW_H;
    }

    if (!terminal) {
      const nx = x(data.now);
      svg.appendChild(el("line", { x1: nx, x2: nx, y1: AXIS_H - 4, y2: height, class: "now" }));
    }
    container.replaceChildren(svg);
    return svg;
  }

  window.KodoTimeline = { render: render, duration: duration, STEPS: STEPS };
})();
