// kodo's operator UI: the run list (and start form), a run page, the ops board. Plain JS, no build.
//
// Routes (query strings on `/`): `?wid=<workflow id>` a run, `?view=ops` the ops board, else the
// run list. Every call goes to the API this page came from; with a bearer token saved (the header's
// token field, kept in localStorage) each request carries `Authorization: Bearer <token>`.
"use strict";

(function () {
  const TERMINAL = new Set(["succeeded", "failed", "canceled", "retries_exceeded"]);
  const OPS_STATUSES = ["", "PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"];
  const JSON_KINDS = new Set(["json", "raw", "timings", "artifact_index", "question_card", "plan_card",
    "json_diagnostic"]);
  const POLL_MS = 500;
  const store = {
    get: (k, d) => { try { return localStorage.getItem("kodo." + k) || d; } catch (e) { return d; } },
    set: (k, v) => { try { if (v) localStorage.setItem("kodo." + k, v); else localStorage.removeItem("kodo." + k); } catch (e) { /* private mode */ } },
  };

  // ---- helpers ----------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "value") node.value = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  const enc = encodeURIComponent;

  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const token = store.get("token", "");
    if (token) headers["authorization"] = "Bearer " + token;
    const r = await fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const ctype = r.headers.get("content-type") || "";
    const data = ctype.startsWith("application/json") ? await r.json().catch(() => null) : await r.text();
    if (!r.ok) {
      const err = new Error((data && data.error) || r.status + " " + r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function badge(status) {
    return h("span", { class: "badge s-" + String(status).toLowerCase(), "data-status": status }, status);
  }

  function when(ms) {
    if (!ms) return "";
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function flash(target, text, ok) {
    target.replaceChildren(h("div", { class: ok ? "flash ok" : "flash err", role: "status" }, text));
  }

  function go(url) {
    history.pushState(null, "", url);
    route();
  }

  function link(url, text, attrs) {
    return h("a", Object.assign({ href: url, onclick: (e) => { if (e.button === 0 && !e.metaKey && !e.ctrlKey) { e.preventDefault(); go(url); } } }, attrs || {}), text);
  }

  // ---- the run list ------------------------------------------------------------------------------

  function listPage(root) {
    const msg = h("div", { id: "start-msg" });
    const goal = h("input", { id: "goal", name: "goal", required: true, placeholder: "what should the run do?", size: 40 });
    const partition = h("input", { id: "partition", name: "partition", required: true, value: store.get("partition", "ui-default"), size: 16 });
    const trace = h("input", { id: "trace-id", name: "traceId", placeholder: "optional", size: 12 });
    const ask = h("input", { id: "ask-user", type: "checkbox" });
    const form = h("form", { id: "start-form", class: "card row-form", onsubmit: start },
      h("label", {}, "Goal ", goal),
      h("label", {}, "Partition key ", partition),
      h("label", {}, "Trace id ", trace),
      h("label", { title: "open the ask gate: the run waits for an answer after CompileST" }, ask, " ask for input"),
      h("button", { type: "submit", id: "start-run", class: "primary" }, "Start run"), msg);
    const body = h("tbody", { id: "runs-body" });
    const table = h("table", { id: "runs", class: "grid" },
      h("thead", {}, h("tr", {}, ["status", "goal", "workflow", "partition", "last step", "next action", "created"].map((c) => h("th", {}, c)))),
      body);
    root.replaceChildren(h("h1", {}, "Runs"), form, table);
    goal.focus();

    async function start(e) {
      e.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        store.set("partition", partition.value.trim());
        const constraints = ask.checked ? { askUser: true } : {};
        const intent = await api("POST", "/api/intents", { goal: goal.value, inputs: {}, constraints: constraints });
        const req = { intentId: intent.intentId, recipeName: "compile-default", queuePartitionKey: partition.value.trim() };
        if (trace.value.trim()) req.traceId = trace.value.trim();
        const run = await api("POST", "/api/runs", req);
        go("/?wid=" + enc(run.workflowID));
      } catch (err) {
        flash(msg, "could not start: " + err.message, false);
      } finally {
        button.disabled = false;
      }
    }

    async function refresh() {
      try {
        const runs = await api("GET", "/api/ui/runs?limit=50");
        body.replaceChildren(...runs.map((r) => h("tr", { "data-wid": r.workflowID },
          h("td", {}, badge(r.status)),
          h("td", { class: "goal" }, r.goal || ""),
          h("td", { class: "mono" }, link("/?wid=" + enc(r.workflowID), r.workflowID)),
          h("td", {}, r.partitionKey || ""),
          h("td", {}, r.lastStep || ""),
          h("td", {}, r.nextAction || ""),
          h("td", {}, when(r.createdAt)))));
        if (!runs.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no runs yet")));
      } catch (err) {
        body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "err" }, err.message)));
      }
    }
    refresh();
    const timer = setInterval(refresh, 2000);
    return () => clearInterval(timer);
  }

  // ---- the run page ------------------------------------------------------------------------------

  function stepOf(uri) {
    const m = /\/step\/([^/]*)\//.exec(uri || "");
    return m ? m[1] : "";
  }

  function traceLink(base, traceId, spanId) {
    if (!base || !traceId) return null;
    let url = base.includes("{traceId}") ? base.split("{traceId}").join(enc(traceId)) : base.replace(/\/?$/, "/") + enc(traceId);
    url = url.split("{spanId}").join(enc(spanId || ""));
    return h("a", { href: url, target: "_blank", rel: "noopener", class: "trace" }, "trace");
  }

  function runPage(root, wid) {
    const state = { alive: true, inflight: false, dirty: false, view: null, header: null, timeline: null,
      actionsKey: null, artifactsKey: null, es: null, poll: null, safety: null, everOpened: false, lastEventId: "" };
    const indicator = h("span", { id: "live", class: "live off" }, "connecting");
    const summary = h("div", { id: "run-summary", class: "card" }, "loading…");
    const actions = h("div", { id: "run-actions" });
    const msg = h("div", { id: "action-msg" }); // outlives the action cards (redrawn on each change)
    const chart = h("div", { id: "timeline-box", class: "card chart" });
    const steps = h("div", { id: "steps" });
    const output = h("pre", { id: "live-output", class: "output", hidden: true });
    const artifacts = h("ul", { id: "artifacts", class: "artifacts" });
    const sheet = h("aside", { id: "artifact-sheet", class: "sheet", hidden: true });
    root.replaceChildren(
      h("div", { class: "title-row" }, h("h1", {}, "Run ", h("span", { class: "mono" }, wid)), indicator),
      summary, actions, msg,
      h("h2", {}, "Timeline"), chart,
      h("div", { class: "legend" },
        h("span", { class: "sw step" }), "step attempt ", h("span", { class: "sw wait" }), "queue wait ",
        h("span", { class: "sw run" }), "sandbox run ", h("span", { class: "sw failed" }), "failed ",
        h("span", { class: "sw fanout" }), "fan-out ", h("span", { class: "sw pending" }), "pending"),
      steps, output,
      h("h2", {}, "Artifacts"), artifacts, sheet);

    // What this page got from the run stream, in order: each event's id and type, and each state the
    // live indicator went through (tests/e2e/test_ui_stream.py compares it with the server's stream).
    const seen = window.kodoStream = { wid: wid, events: [], live: ["connecting"] };

    function setLive(mode, text) {
      indicator.className = "live " + mode;
      indicator.textContent = text || mode;
      if (seen.live[seen.live.length - 1] !== indicator.textContent) seen.live.push(indicator.textContent);
    }

    async function refresh() {
      if (!state.alive) return;
      if (state.inflight) { state.dirty = true; return; }
      state.inflight = true;
      try {
        const path = enc(wid);
        const [view, header, timeline] = await Promise.all([
          api("GET", "/runs/" + path),
          api("GET", "/api/runs/" + path).catch(() => null),
          api("GET", "/api/ui/runs/" + path + "/timeline").catch(() => null),
        ]);
        if (!state.alive) return;
        state.view = view; state.header = header; state.timeline = timeline;
        draw();
      } catch (err) {
        summary.replaceChildren(h("div", { class: "err" }, err.status === 404 ? "run not found: " + wid : err.message));
      } finally {
        state.inflight = false;
        if (state.dirty && state.alive) { state.dirty = false; refresh(); }
      }
    }

    function draw() {
      const v = state.view;
      const base = state.header && state.header.traceBaseUrl;
      summary.replaceChildren(
        h("dl", { class: "facts" },
          h("dt", {}, "status"), h("dd", { id: "run-status" }, badge(v.status)),
          h("dt", {}, "header"), h("dd", {}, state.header ? state.header.status : "?"),
          h("dt", {}, "run id"), h("dd", { class: "mono" }, v.runId),
          h("dt", {}, "last step"), h("dd", { id: "run-last-step" }, v.lastStep || "—"),
          h("dt", {}, "next action"), h("dd", { id: "run-next-action" }, v.nextAction || "—"),
          h("dt", {}, "retries"), h("dd", {}, String(v.retryCount)),
          v.traceId ? [h("dt", {}, "trace"), h("dd", { class: "mono" }, v.traceId, " ", traceLink(base, v.traceId, null))] : null,
          v.error ? [h("dt", {}, "error"), h("dd", { id: "run-error", class: "err" }, v.error)] : null));
      drawActions();
      if (state.timeline) window.KodoTimeline.render(chart, state.timeline, v);
      steps.replaceChildren(h("table", { class: "grid compact" },
        h("thead", {}, h("tr", {}, ["step", "phase", "started", "finished", "took", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, v.steps.map((s) => {
          const took = s.startedAt && s.finishedAt ? Date.parse(s.finishedAt) - Date.parse(s.startedAt) : null;
          return h("tr", { "data-step": s.stepId },
            h("td", {}, s.stepId), h("td", {}, s.phase),
            h("td", {}, s.startedAt ? when(Date.parse(s.startedAt)) : ""),
            h("td", {}, s.finishedAt ? when(Date.parse(s.finishedAt)) : ""),
            h("td", {}, took === null ? "" : window.KodoTimeline.duration(took)),
            h("td", {}, traceLink(base, s.traceId, s.spanId)));
        }))));
      drawArtifacts();
    }

    function drawActions() {
      const v = state.view;
      const key = [v.status, v.nextAction || ""].join("|");
      if (key === state.actionsKey) return; // keep what the operator is typing
      state.actionsKey = key;
      const parts = [];
      if (v.nextAction === "APPROVE_PLAN") {
        const who = h("input", { id: "approved-by", value: store.get("actor", "operator"), size: 12 });
        const notes = h("input", { id: "approve-notes", placeholder: "notes (optional)", size: 24 });
        parts.push(h("div", { class: "card action approve" },
          h("strong", {}, "The plan waits for approval. "),
          h("label", {}, "by ", who), " ", notes, " ",
          h("button", { id: "approve", class: "primary", onclick: async (e) => {
            e.target.disabled = true;
            try {
              store.set("actor", who.value.trim());
              const body = { approvedBy: who.value.trim() || "operator" };
              if (notes.value.trim()) body.notes = notes.value.trim();
              const r = await api("POST", "/runs/" + enc(v.runId) + "/approve-plan", body);
              flash(msg, "approved at " + r.approvedAt, true);
              refresh();
            } catch (err) { flash(msg, "approve failed: " + err.message, false); e.target.disabled = false; }
          } }, "Approve Plan")));
      } else if (v.status === "waiting_input") {
        const card = v.artifacts.find((a) => a.kind === "question_card");
        const question = card && card.inline && card.inline.question ? card.inline.question : "The run waits for input.";
        const answer = h("textarea", { id: "answer-text", rows: 2, cols: 50, placeholder: "your answer" });
        parts.push(h("div", { class: "card action answer" },
          h("div", { id: "question" }, h("strong", {}, "Question: "), question),
          answer, " ",
          h("button", { id: "answer-send", class: "primary", onclick: async (e) => {
            e.target.disabled = true;
            try {
              await api("POST", "/runs/" + enc(v.runId) + "/events", { type: "answer", payload: { answer: answer.value } });
              flash(msg, "answer sent", true);
              state.actionsKey = null;
              refresh();
            } catch (err) { flash(msg, "send failed: " + err.message, false); e.target.disabled = false; }
          } }, "Send answer")));
      }
      if (v.status === "retries_exceeded" || v.status === "failed") {
        parts.push(h("div", { class: "card action retry" },
          h("strong", {}, "The run " + v.status.replace("_", " ") + ". "),
          h("button", { id: "retry", class: "primary", onclick: async (e) => {
            e.target.disabled = true;
            try {
              const r = await api("POST", "/runs/" + enc(v.runId) + "/retry");
              flash(msg, "repair started from " + r.fromStep, true);
              reconnect();
            } catch (err) { flash(msg, "retry failed: " + err.message, false); e.target.disabled = false; }
          } }, "Retry")));
      }
      actions.replaceChildren(...parts);
    }

    function drawArtifacts() {
      const list = state.view.artifacts;
      const key = list.map((a) => a.uri + "@" + a.sha256).join("\n");
      if (key === state.artifactsKey) return;
      state.artifactsKey = key;
      artifacts.replaceChildren(...list.map((a, i) => h("li", { "data-kind": a.kind, "data-uri": a.uri || "" },
        h("button", { class: "open-artifact", onclick: () => openArtifact(a) }, a.kind),
        h("span", { class: "step-tag" }, stepOf(a.uri) || "?"),
        h("span", { class: "mono uri" }, a.uri || "(inline #" + i + ")"))));
      if (!list.length) artifacts.replaceChildren(h("li", { class: "muted" }, "no artifacts yet"));
    }

    async function openArtifact(a) {
      const content = h("div", { class: "content", id: "artifact-content" }, "loading…");
      sheet.replaceChildren(
        h("div", { class: "sheet-head" }, h("strong", {}, "Artifact"),
          h("button", { id: "close-sheet", onclick: () => { sheet.hidden = true; } }, "close")),
        h("dl", { class: "facts" },
          h("dt", {}, "kind"), h("dd", { id: "artifact-kind" }, a.kind),
          h("dt", {}, "URI"), h("dd", { class: "mono" }, a.uri || "—"),
          h("dt", {}, "sha256"), h("dd", { class: "mono", id: "artifact-sha" }, a.sha256)),
        content);
      sheet.hidden = false;
      if (!a.uri) { content.replaceChildren(h("pre", { class: "json" }, JSON.stringify(a.inline, null, 2))); return; }
      const url = "/api/artifacts/" + enc(a.uri);
      try {
        const r = await fetch(url);
        const ctype = r.headers.get("content-type") || "";
        if (!r.ok) throw new Error(r.status + " " + (await r.text()));
        if (ctype.startsWith("image/")) {
          content.replaceChildren(h("img", { src: url, alt: a.kind, class: "artifact-img" }));
        } else {
          const text = await r.text();
          let shown = text;
          if (ctype.startsWith("application/json") || JSON_KINDS.has(a.kind)) {
            try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON after all */ }
            content.replaceChildren(h("pre", { class: "json", "data-type": "json" }, shown));
          } else {
            content.replaceChildren(h("pre", { class: "text", "data-type": "text" }, shown));
          }
        }
      } catch (err) {
        content.replaceChildren(h("div", { class: "err" }, "could not load: " + err.message));
      }
    }

    // Live updates: the run's event stream when the API has it, else polling every 500 ms.
    function onEvent(ev) {
      seen.events.push({ id: ev.lastEventId, event: ev.type });
      if (ev.lastEventId) state.lastEventId = ev.lastEventId;
      refresh();
    }

    function onOutput(ev) {
      onEvent(ev);
      try {
        const d = JSON.parse(ev.data);
        output.hidden = false;
        const tag = "[" + String(d.taskKey || "").slice(0, 8) + " " + d.kind + "] ";
        output.textContent += d.kind === "stream_closed" ? tag + "end of output\n" : tag + (d.chunk || "");
        if (output.textContent.length > 20000) output.textContent = output.textContent.slice(-20000);
      } catch (e) { /* a malformed chunk is not shown */ }
    }

    function startPolling() {
      stopStream();
      setLive("polling", "polling");
      if (!state.poll) state.poll = setInterval(refresh, POLL_MS);
    }

    function stopStream() {
      if (state.es) { state.es.close(); state.es = null; }
    }

    function connect() {
      if (!state.alive) return;
      if (!window.EventSource) { startPolling(); return; }
      stopStream();
      const q = state.lastEventId ? "?lastEventId=" + enc(state.lastEventId) : "";
      const es = new EventSource("/api/runs/" + enc(wid) + "/stream" + q);
      state.es = es;
      es.onopen = () => { state.everOpened = true; setLive("on", "live"); refresh(); };
      es.addEventListener("status", onEvent);
      es.addEventListener("step", onEvent);
      es.addEventListener("output", onOutput);
      es.addEventListener("end", (ev) => {
        onEvent(ev);
        stopStream();
        setLive("ended", "ended");
      });
      es.onerror = () => {
        if (!state.alive || state.es !== es) return;
        if (es.readyState === EventSource.CLOSED) {
          // Never opened: no stream route (404) or no event stream here; fall back to polling.
          if (!state.everOpened) { startPolling(); return; }
          stopStream();
          setLive("reconnecting", "reconnecting");
          setTimeout(connect, 1000);
        } else {
          setLive("reconnecting", "reconnecting"); // the browser reconnects with Last-Event-ID itself
        }
      };
    }

    function reconnect() {
      state.actionsKey = null;
      if (!state.poll) connect();
      refresh();
    }

    refresh();
    connect();
    // A slow safety net under the stream (a missed event never leaves the page stale for long).
    state.safety = setInterval(() => { if (!state.poll) refresh(); }, 1000);
    return () => {
      state.alive = false;
      stopStream();
      clearInterval(state.poll);
      clearInterval(state.safety);
    };
  }

  // ---- the ops board -----------------------------------------------------------------------------

  function opsPage(root) {
    const q = new URLSearchParams(location.search);
    const state = { status: q.get("status") || "", name: q.get("name") || "" };
    const actor = h("input", { id: "ops-actor", value: store.get("actor", "operator"), size: 12 });
    const reason = h("input", { id: "ops-reason", placeholder: "reason", size: 24 });
    const name = h("input", { id: "ops-name", value: state.name, placeholder: "workflow name (e.g. run)", size: 18 });
    const msg = h("div", { id: "ops-msg" });
    const tabs = h("div", { class: "tabs", id: "ops-tabs" });
    const body = h("tbody", { id: "ops-body" });
    const queues = h("div", { id: "queues", class: "card" });
    root.replaceChildren(
      h("h1", {}, "Ops board"),
      h("div", { class: "card row-form" },
        h("label", {}, "actor ", actor), h("label", {}, "reason ", reason), h("label", {}, "name ", name), msg),
      tabs,
      h("table", { id: "ops-table", class: "grid" },
        h("thead", {}, h("tr", {}, ["status", "workflow", "name", "queue", "version", "created", "actions"].map((c) => h("th", {}, c)))),
        body),
      h("h2", {}, "Queue depth"), queues);
    actor.addEventListener("change", () => store.set("actor", actor.value.trim()));
    name.addEventListener("change", () => { state.name = name.value.trim(); refresh(); });

    function drawTabs() {
      tabs.replaceChildren(...OPS_STATUSES.map((s) => h("button", {
        class: "tab" + (s === state.status ? " active" : ""), "data-status": s || "ALL",
        onclick: () => { state.status = s; drawTabs(); refresh(); },
      }, s || "ALL")));
    }

    function audit() {
      const out = {};
      if (actor.value.trim()) out.actor = actor.value.trim();
      if (reason.value.trim()) out.reason = reason.value.trim();
      return out;
    }

    async function act(wid, op, extra) {
      try {
        const r = await api("POST", "/api/ops/wf/" + enc(wid) + "/" + op, Object.assign(audit(), extra || {}));
        flash(msg, op + " " + wid + ": accepted" + (r.forkedWorkflowID ? " → " + r.forkedWorkflowID : ""), true);
      } catch (err) {
        flash(msg, op + " " + wid + ": " + err.message, false);
      }
      refresh();
    }

    async function refresh() {
      const params = new URLSearchParams({ limit: "50" });
      if (state.status) params.set("status", state.status);
      if (state.name) params.set("name", state.name);
      try {
        const rows = await api("GET", "/api/ops/wf?" + params.toString());
        body.replaceChildren(...rows.map((w) => {
          const stepN = h("input", { class: "fork-step", type: "number", min: 1, value: 1, title: "fork at stepN (functionId)" });
          const isRun = w.workflowClassName === "IntentWorkflow" && /(^|\.)run$/.test(w.workflowName);
          return h("tr", { "data-wid": w.workflowID, "data-status": w.status },
            h("td", { class: "status" }, badge(w.status)),
            h("td", { class: "mono wid", title: w.workflowID }, isRun ? link("/?wid=" + enc(w.workflowID), w.workflowID) : w.workflowID),
            h("td", {}, w.workflowName),
            h("td", {}, w.queueName || ""),
            h("td", {}, w.applicationVersion || ""),
            h("td", {}, when(w.createdAt)),
            h("td", { class: "ops-actions" },
              h("button", { class: "cancel", disabled: !["PENDING", "ENQUEUED"].includes(w.status), onclick: () => act(w.workflowID, "cancel") }, "cancel"),
              h("button", { class: "resume", disabled: !["CANCELLED", "ENQUEUED"].includes(w.status), onclick: () => act(w.workflowID, "resume") }, "resume"),
              stepN,
              h("button", { class: "fork", onclick: () => act(w.workflowID, "fork", { stepN: parseInt(stepN.value, 10) || 1 }) }, "fork")));
        }));
        if (!rows.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no workflows")));
      } catch (err) {
        body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "err" }, err.message)));
      }
      try {
        const depth = await api("GET", "/api/ui/queues");
        const max = Math.max(1, ...depth.map((d) => d.enqueued + d.pending));
        queues.replaceChildren(depth.length ? h("table", { class: "grid compact", id: "queue-table" },
          h("thead", {}, h("tr", {}, ["queue", "partition", "enqueued", "pending", "", "oldest waiting"].map((c) => h("th", {}, c)))),
          h("tbody", {}, depth.map((d) => h("tr", { "data-queue": d.queueName, "data-partition": d.partitionKey || "" },
            h("td", {}, d.queueName), h("td", { class: "mono" }, d.partitionKey || "—"),
            h("td", { class: "num" }, String(d.enqueued)), h("td", { class: "num" }, String(d.pending)),
            h("td", { class: "meter" },
              h("span", { class: "m-wait", style: "width:" + (100 * d.enqueued / max) + "%" }),
              h("span", { class: "m-run", style: "width:" + (100 * d.pending / max) + "%" })),
            h("td", {}, d.oldestEnqueuedAt ? when(d.oldestEnqueuedAt) : ""))))) : h("div", { class: "muted" }, "every queue is empty"));
      } catch (err) {
        queues.replaceChildren(h("div", { class: "err" }, err.message));
      }
    }

    drawTabs();
    refresh();
    const timer = setInterval(refresh, 1000);
    return () => clearInterval(timer);
  }

  // ---- shell -------------------------------------------------------------------------------------

  let cleanup = null;

  function route() {
    if (cleanup) { cleanup(); cleanup = null; }
    const q = new URLSearchParams(location.search);
    const root = document.getElementById("app");
    const wid = q.get("wid");
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active",
      (a.dataset.view === "ops") === (q.get("view") === "ops") && !wid));
    if (wid) cleanup = runPage(root, wid);
    else if (q.get("view") === "ops") cleanup = opsPage(root);
    else cleanup = listPage(root);
  }

  function shell() {
    const token = h("input", { id: "token", type: "password", placeholder: "bearer token (optional)", size: 18, value: store.get("token", "") });
    token.addEventListener("change", () => store.set("token", token.value.trim()));
    const open = h("input", { id: "open-wid", placeholder: "workflow id", size: 18 });
    document.getElementById("top").replaceChildren(
      h("span", { class: "brand" }, "kodo"),
      h("nav", {}, link("/", "Runs", { "data-view": "runs" }), link("/?view=ops", "Ops", { "data-view": "ops" })),
      h("form", { class: "open", onsubmit: (e) => { e.preventDefault(); if (open.value.trim()) go("/?wid=" + enc(open.value.trim())); } }, open),
      h("label", { class: "token" }, "token ", token));
  }

  window.addEventListener("popstate", route);
  shell();
  route();
})();
