// The weir dashboard: a hash-routed page over the REST API. Every value
// that came from a pipeline or a step is put in the page with textContent
// or an attribute, never parsed as HTML.
"use strict";

const main = document.getElementById("main");
let timer = null;

// A page opened with ?token= has its cookie now; keep the token out of history.
if (location.search.includes("token=")) {
  history.replaceState(null, "", location.pathname + location.hash);
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick" || k === "onsubmit") e[k] = v;
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

class NeedsToken extends Error {}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) throw new NeedsToken(body.error || "a token is required");
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// Opened without the token: say where it is, and take it.
function pageToken() {
  clearInterval(timer);
  const input = el("input", { id: "token", type: "password", autocomplete: "off", size: 40 });
  const form = el("form", { id: "token-form" }, input, " ", el("button", { type: "submit" }, "Open"));
  form.onsubmit = (ev) => {
    ev.preventDefault();
    location.href = "/?token=" + encodeURIComponent(input.value.trim()) + location.hash;
  };
  shownHash = null;
  show(el("h1", {}, "This dashboard needs its token"),
    el("p", {}, "weir serve printed a link with it when it started (\"dashboard: http://.../?token=...\"); it is also in the store's serve.token file, or the one given with --token or WEIR_TOKEN."),
    form);
}

function stateTag(s) {
  return el("span", { class: "state st-" + String(s).replace(/\s+/g, "-"), "data-state": s }, s);
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " m " + Math.round((ms % 60000) / 1000) + " s";
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

// A refresh of the page on screen updates it in place (morph): elements
// stay, so the scroll position, a half-typed input and a click under way
// survive a live update. Another page replaces it.
let shownHash = null;

function show(...nodes) {
  const kids = nodes.flat().filter((n) => n !== null && n !== undefined);
  if (shownHash === location.hash && main.childNodes.length) {
    const box = document.createElement("div");
    box.append(...kids);
    morphChildren(main, box);
  } else {
    main.replaceChildren(...kids);
    shownHash = location.hash;
  }
}

const HANDLERS = ["onclick", "onsubmit", "onchange", "oninput"];

function morph(old, neu) {
  if (old.nodeType !== neu.nodeType || old.nodeName !== neu.nodeName) {
    old.replaceWith(neu);
    return;
  }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== neu.nodeValue) old.nodeValue = neu.nodeValue;
    return;
  }
  for (const a of [...old.attributes]) if (!neu.hasAttribute(a.name)) old.removeAttribute(a.name);
  for (const a of [...neu.attributes]) {
    if (old.getAttribute(a.name) === a.value) continue;
    // Styles go through the CSSOM (the CSP allows no inline style attributes).
    if (a.name === "style") old.style.cssText = neu.style.cssText;
    else old.setAttribute(a.name, a.value);
  }
  for (const h of HANDLERS) if (old[h] !== neu[h]) old[h] = neu[h];
  // What a person is typing or has typed stays theirs.
  if (old.nodeName === "INPUT" || old.nodeName === "SELECT" || old.nodeName === "TEXTAREA") return;
  morphChildren(old, neu);
}

function morphChildren(old, neu) {
  const oc = [...old.childNodes], nc = [...neu.childNodes];
  for (let i = 0; i < nc.length; i++) {
    if (i < oc.length) morph(oc[i], nc[i]);
    else old.append(nc[i]);
  }
  for (let i = nc.length; i < oc.length; i++) oc[i].remove();
}

function fail(e) {
  if (e instanceof NeedsToken) return pageToken();
  show(el("p", { class: "error" }, String(e.message || e)));
}

function every(ms, f) {
  clearInterval(timer);
  timer = setInterval(() => f().catch(() => {}), ms);
}

// ---- runs list -----------------------------------------------------------
const PAGE_RUNS = 50;

async function pageRuns(q) {
  const f = new URLSearchParams(q || "");
  const page = Math.max(1, parseInt(f.get("page") || "1", 10) || 1);
  const query = new URLSearchParams({ limit: PAGE_RUNS + 1, offset: (page - 1) * PAGE_RUNS });
  for (const k of ["pipeline", "state", "source"]) if (f.get(k)) query.set(k, f.get(k));
  const { runs: got } = await api("/api/runs?" + query);
  const more = got.length > PAGE_RUNS;
  const runs = got.slice(0, PAGE_RUNS);
  const { pipelines } = await api("/api/pipelines");
  const pick = el("select", { id: "filter-pipeline", name: "pipeline" },
    el("option", { value: "" }, "all pipelines"),
    pipelines.map((p) => el("option", p.name === f.get("pipeline") ? { value: p.name, selected: "" } : { value: p.name }, p.name)));
  const states = ["running", "succeeded", "failed", "cancelled", "interrupted"];
  const st = el("select", { id: "filter-state", name: "state" },
    el("option", { value: "" }, "any state"),
    states.map((s) => el("option", s === f.get("state") ? { value: s, selected: "" } : { value: s }, s)));
  const src = el("select", { id: "filter-source", name: "source" },
    el("option", { value: "" }, "any trigger"),
    ["manual", "schedule", "backfill", "upstream", "model", "watch"].map((s) => el("option", s === f.get("source") ? { value: s, selected: "" } : { value: s }, s)));
  const filters = el("form", { id: "filters" }, pick, " ", st, " ", src, " ", el("button", { type: "submit", class: "secondary" }, "Filter"));
  filters.onsubmit = (ev) => {
    ev.preventDefault();
    const live = ev.currentTarget.elements;
    const n = new URLSearchParams();
    for (const k of ["pipeline", "state", "source"]) if (live[k].value) n.set(k, live[k].value);
    location.hash = "#/?" + n;
  };
  const goto = (p) => { const n = new URLSearchParams(f); n.set("page", p); location.hash = "#/?" + n; };
  const pager = el("p", { class: "pager" }, "page " + page + " ");
  if (page > 1) { const b = el("button", { class: "secondary", id: "runs-prev" }, "newer"); b.onclick = () => goto(page - 1); pager.append(b); }
  if (more) { const b = el("button", { class: "secondary", id: "runs-next" }, "older"); b.onclick = () => goto(page + 1); pager.append(b); }
  const compare = el("button", { id: "compare-picked", class: "secondary" }, "Compare selected");
  compare.onclick = () => {
    const ids = [...main.querySelectorAll("input.pick:checked")].map((i) => i.value);
    if (ids.length >= 2) location.hash = "#/compare?runs=" + ids.join(",");
  };
  const rows = runs.map((r) =>
    el("tr", { "data-run": r.run },
      el("td", {}, el("input", { type: "checkbox", class: "pick", value: r.run, "aria-label": "compare run " + r.run })),
      el("td", {}, el("a", { href: "#/runs/" + r.run }, "#" + r.run)),
      el("td", {}, r.pipeline),
      el("td", {}, stateTag(r.preparing ? "preparing" : r.state)),
      el("td", {}, fmtTime(r.started_ms)),
      el("td", {}, fmtMs(r.duration_ms)),
      el("td", { class: "source", title: r.trigger || "" }, r.trigger ? `${r.source} (${r.trigger})` : r.source || ""),
      el("td", { class: "mono" }, r.params && Object.keys(r.params).length ? Object.entries(r.params).map(([k, v]) => k + "=" + v).join(" ") : ""),
      el("td", { class: "error" }, r.error || "")));
  show(
    el("h1", {}, "Runs"),
    filters,
    el("table", { id: "runs" },
      el("tr", {}, ["", "Run", "Pipeline", "State", "Started", "Duration", "Trigger", "Params", "Error"].map((h) => el("th", {}, h))),
      rows),
    runs.length ? null : el("p", { class: "muted" }, f.toString() ? "No runs match." : "No runs yet: trigger one from Pipelines."),
    el("p", {}, compare),
    pager);
  const again = () => pageRuns(q);
  if (runs.some((r) => r.active)) every(1000, again); else every(3000, again);
}

// ---- pipelines and the trigger form ---------------------------------------
async function pagePipelines() {
  clearInterval(timer);
  const { pipelines } = await api("/api/pipelines");
  const cards = pipelines.map((p) => {
    // Typed inputs: a number for a number, a checkbox for a boolean.
    const inputs = Object.entries(p.params || {}).map(([k, v]) => {
      const id = "param-" + p.name + "-" + k;
      const attrs = typeof v === "boolean"
        ? Object.assign({ id, name: k, type: "checkbox", "data-kind": "boolean" }, v ? { checked: "" } : {})
        : typeof v === "number"
          ? { id, name: k, type: "number", step: Number.isInteger(v) ? "1" : "any", value: String(v), "data-kind": "number" }
          : { id, name: k, value: typeof v === "string" ? v : JSON.stringify(v), "data-kind": "string" };
      return el("p", {}, el("label", { for: id }, k), el("input", attrs),
        el("span", { class: "muted" }, " default " + JSON.stringify(v)));
    });
    const msg = el("p", { class: "error" });
    const form = el("form", { class: "trigger", "data-pipeline": p.name }, inputs,
      el("button", { type: "submit" }, "Trigger run"), msg);
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const live = ev.currentTarget;
      const params = {};
      for (const i of live.querySelectorAll("input")) {
        params[i.name] = i.dataset.kind === "boolean" ? i.checked : i.dataset.kind === "number" && i.value !== "" ? Number(i.value) : i.value;
      }
      try {
        const r = await api("/api/pipelines/" + encodeURIComponent(p.name) + "/runs", {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ params }),
        });
        location.hash = "#/runs/" + r.run;
      } catch (e) { live.querySelector("p.error").textContent = e.message; }
    };
    return el("div", { class: "card" },
      el("h2", {}, el("a", { href: "#/pipelines/" + encodeURIComponent(p.name) }, p.name)),
      el("p", { class: "muted" }, p.script + " · " + p.steps + " steps" + (p.schedule ? " · schedule " + p.schedule + " (next " + (p.next_fire || "?") + ")" : "") + " · " + p.active_runs + " active"),
      p.error ? el("p", { class: "error" }, p.error) : form);
  });
  show(el("h1", {}, "Pipelines"), cards.length ? cards : el("p", { class: "muted" }, "No pipeline scripts (*.rhai) in the project."));
}

// ---- a pipeline: its metrics across runs ----------------------------------
const OPS = { lt: "<", le: "≤", gt: ">", ge: "≥", eq: "=", ne: "≠" };

async function pagePipeline(name) {
  clearInterval(timer);
  const m = await api("/api/pipelines/" + encodeURIComponent(name) + "/metrics?limit=100");
  const charts = Object.entries(m.series).map(([metric, pts]) =>
    el("div", { class: "card series", "data-metric": metric },
      el("h2", {}, metric), seriesChart(metric, pts, m.runs, m.thresholds.filter((t) => t.metric === metric))));
  show(el("h1", {}, "Pipeline " + name),
    el("p", { class: "muted" }, m.runs.length + " run(s), oldest first · ● succeeded · ✕ failed · ○ a gate skipped a step · dashed: a gate's threshold"),
    charts.length ? charts : el("p", { class: "muted" }, "No metrics recorded yet."));
}

// One metric over runs: a line through the values, each run's point marked
// by the run's state, and the gates' thresholds as dashed lines.
function seriesChart(metric, pts, runs, thresholds) {
  const W = 640, H = 180, L = 54, B = 24, T = 10;
  const byRun = new Map(runs.map((r, i) => [r.run, Object.assign({ i }, r)]));
  const values = pts.map((p) => p.value).concat(thresholds.map((t) => t.value));
  let lo = Math.min(...values), hi = Math.max(...values);
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (i) => L + (runs.length > 1 ? (W - L - 10) * i / (runs.length - 1) : (W - L) / 2);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const s = svg("svg", { class: "series-chart", width: W, height: H });
  s.append(svg("text", { x: 0, y: T + 8, fill: "#555" }, fmtNum(hi)));
  s.append(svg("text", { x: 0, y: H - B, fill: "#555" }, fmtNum(lo)));
  for (const t of thresholds) {
    s.append(svg("line", { class: "threshold", x1: L, x2: W - 10, y1: y(t.value), y2: y(t.value), "data-value": t.value }));
    s.append(svg("text", { x: W - 150, y: y(t.value) - 4, fill: "#c0392b" }, (OPS[t.op] || t.op) + " " + fmtNum(t.value) + " (gates " + t.gates + ")"));
  }
  const coords = pts.filter((p) => byRun.has(p.run)).map((p) => [x(byRun.get(p.run).i), y(p.value), p]);
  if (coords.length > 1) s.append(svg("polyline", { class: "line", points: coords.map(([a, b]) => a + "," + b).join(" ") }));
  for (const [cx, cy, p] of coords) {
    const r = byRun.get(p.run);
    const kind = r.state === "failed" ? "failed" : r.gated ? "gated" : "ok";
    const g = svg("a", { href: "#/runs/" + p.run });
    g.append(kind === "failed"
      ? svg("text", { x: cx - 4, y: cy + 4, class: "pt failed", "data-run": p.run }, "✕")
      : svg("circle", { cx, cy, r: 4, class: "pt " + kind, "data-run": p.run }));
    g.append(svg("title", {}, "run #" + p.run + ": " + fmtNum(p.value) + " (" + r.state + (r.gated ? ", gated" : "") + ")"));
    s.append(g);
  }
  return s;
}

// ---- a run: DAG, steps, step detail ---------------------------------------
function layout(nodes, edges) {
  const depth = {};
  const preds = {};
  for (const n of nodes) preds[n.name] = [];
  for (const e of edges) if (preds[e.to]) preds[e.to].push(e.from);
  const d = (name, seen) => {
    if (depth[name] !== undefined) return depth[name];
    if (seen.has(name)) return 0;
    seen.add(name);
    const ps = preds[name] || [];
    depth[name] = ps.length ? 1 + Math.max(...ps.map((p) => d(p, seen))) : 0;
    return depth[name];
  };
  for (const n of nodes) d(n.name, new Set());
  const cols = {};
  for (const n of nodes) (cols[depth[n.name]] = cols[depth[n.name]] || []).push(n.name);
  const pos = {};
  const W = 160, H = 36, GX = 34, GY = 20, BAND_GAP = 28;
  let maxRows = 0;
  for (const names of Object.values(cols)) maxRows = Math.max(maxRows, names.length);
  // A long graph wraps its columns into bands that fit the page's width
  // (a 10,000-step chain stays in view; the box scrolls down through it).
  const ncols = Object.keys(cols).length;
  const perBand = Math.max(1, Math.min(ncols, Math.floor(1100 / (W + GX))));
  const bandH = maxRows * (H + GY) + BAND_GAP;
  for (const [c, names] of Object.entries(cols)) {
    const band = Math.floor(c / perBand), col = c % perBand;
    names.forEach((name, i) => { pos[name] = { x: 10 + col * (W + GX), y: 10 + band * bandH + i * (H + GY) }; });
  }
  const bands = Math.ceil(ncols / perBand);
  return { pos, W, H, width: 20 + perBand * (W + GX), height: 20 + bands * bandH - BAND_GAP };
}

const COLORS = {
  succeeded: "#2e8b57", cached: "#3b7dd8", failed: "#c0392b", running: "#d68910", retrying: "#d68910",
  skipped: "#a0a7b4", cancelled: "#6c3483", pending: "#b8bec9", "not run": "#a0a7b4",
  interrupted: "#b9770e", preparing: "#5d6d7e",
};

function drawDag(graph, runId) {
  return el("div", { class: "dag-box", id: "dag-box" }, drawDagSvg(graph, runId));
}

function drawDagSvg(graph, runId) {
  const { pos, W, H, width, height } = layout(graph.nodes, graph.edges);
  const s = svg("svg", { class: "dag", id: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    s.append(svg("path", {
      class: "edge" + (e.kind === "gate" ? " gate" : e.kind === "map" ? " map" : ""),
      "data-from": e.from, "data-to": e.to,
      d: `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}`,
    }));
  }
  for (const n of graph.nodes) {
    const p = pos[n.name];
    const g = svg("g", { class: "node", "data-step": n.name, "data-state": n.state, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: W, height: H, rx: 5, fill: COLORS[n.state] || "#7a8394" }));
    const total = n.children_total !== undefined ? n.children_total : (n.children || []).length;
    let label = n.name + (n.gated ? " ◇" : "") + (n.map ? " ×" + total : "");
    if (label.length > 22) label = label.slice(0, 21) + "…";
    g.append(svg("text", { x: 8, y: 15 }, label));
    // A map node counts its children by state (the list is on its detail).
    const counts = Object.entries(n.children_by_state || {}).map(([st, k]) => k + " " + st).join(", ");
    g.append(svg("text", { x: 8, y: 30 }, n.map && counts ? counts : n.state + (n.gated ? " (gated)" : "")));
    g.onclick = () => { location.hash = "#/runs/" + runId + "/steps/" + encodeURIComponent(n.name); };
    s.append(g);
  }
  return s;
}

async function pageRun(id, step) {
  const d = await api("/api/runs/" + id);
  const r = d.run;
  const actions = el("p", {});
  if (r.active) {
    const b = el("button", { id: "cancel", class: "secondary" }, "Cancel run");
    b.onclick = async () => { try { await api("/api/runs/" + id + "/cancel", { method: "POST" }); } catch (e) { alert(e.message); } };
    actions.append(b);
  } else if (r.state !== "succeeded") {
    const b = el("button", { id: "retry", class: "secondary" }, "Retry failed steps");
    b.onclick = async () => { try { await api("/api/runs/" + id + "/retry", { method: "POST" }); route(); } catch (e) { alert(e.message); } };
    actions.append(b);
  }
  // Every step of the plan, recorded or not yet: a running step shows while it runs.
  const recorded = new Map(d.steps.map((s) => [s.step, s]));
  // A very long run lists its first steps here (the graph and the timeline
  // show all); the rest are a link away.
  const shown = showAllSteps === id ? d.graph.nodes : d.graph.nodes.slice(0, MAX_TABLE_STEPS);
  const steps = shown.map((n) => {
    const s = recorded.get(n.name) || {};
    const live = d.live && d.live[n.name];
    return el("tr", { "data-step": n.name },
      el("td", {}, el("a", { href: "#/runs/" + id + "/steps/" + encodeURIComponent(n.name) }, n.name)),
      el("td", {}, stateTag(s.state || live || n.state)),
      el("td", {}, s.ended_ms ? fmtMs(s.ended_ms - s.started_ms) : ""),
      el("td", {}, s.attempts > 1 ? String(s.attempts) : s.attempts ? "1" : ""),
      el("td", {}, Object.entries(s.outputs || {}).map(([k, v]) => el("div", {}, k + " = ", el("a", { href: "#/artifacts/" + v, class: "mono" }, v.slice(0, 12))))),
      el("td", { class: "error" }, s.error || ""));
  });
  const detail = el("div", { id: "step-detail" });
  if (step) await stepDetail(id, step, detail);
  show(
    el("h1", {}, "Run #" + r.run + " · " + r.pipeline + " ", stateTag(r.preparing ? "preparing" : r.state)),
    r.preparing ? el("p", { class: "muted", id: "preparing" }, "preparing: " + r.preparing) : null,
    el("p", { class: "muted" }, "started " + fmtTime(r.started_ms) + " · " + fmtMs(r.duration_ms) + (r.params ? " · params " + JSON.stringify(r.params) : "")),
    r.error ? el("p", { class: "error" }, r.error) : null,
    actions,
    // With a step open, its detail sits beside the graph, not below a
    // table that may be long.
    el("div", { class: step ? "run-layout with-detail" : "run-layout" },
      el("div", { class: "run-main" },
    drawDag(d.graph, id),
    el("p", { class: "muted" }, "◇ gated by a condition · ×N map children · blue = cached"),
    el("h2", {}, "Timeline"),
    el("div", { class: "scroll-x" }, timeline(d.attempts || {}, d.steps.slice(0, MAX_TABLE_STEPS).concat(
      // Steps still running: from their start to now.
      Object.entries(d.live_started || {})
        .filter(([name]) => !recorded.has(name) && (d.live || {})[name] && !name.includes("["))
        .map(([name, t]) => ({ step: name, state: d.live[name], started_ms: t, ended_ms: null, attempts: 0 }))), r)),
    el("h2", {}, "Steps"),
    el("table", { id: "steps" }, el("tr", {}, ["Step", "State", "Duration", "Attempts", "Outputs", "Error"].map((h) => el("th", {}, h))), steps),
    shown.length < d.graph.nodes.length ? moreSteps(id, step, shown.length, d.graph.nodes.length) : null),
      detail));
  if (r.active) every(1000, () => pageRun(id, step)); else clearInterval(timer);
}

const MAX_TABLE_STEPS = 500;
let showAllSteps = null;

function moreSteps(id, step, shown, total) {
  const b = el("button", { class: "secondary", id: "all-steps" }, "show all " + total);
  b.onclick = () => { showAllSteps = id; pageRun(id, step); };
  return el("p", { class: "muted" }, "the first " + shown + " of " + total + " steps ", b);
}

// The run's steps on a time axis (a Gantt chart): a bar per step from its
// start to its end (to now while it runs), coloured by state; cache hits
// are thin marks, retried steps say how many attempts they took.
function fmtBytes(b) {
  if (b === null || b === undefined) return "";
  return b >= 1 << 30 ? (b / (1 << 30)).toFixed(2) + " GiB" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : Math.round(b / 1024) + " KiB";
}

function timeline(attempts, records, run) {
  const rows = records.filter((s) => s.started_ms);
  if (!rows.length) return el("p", { class: "muted", id: "timeline" }, "No step has started yet.");
  const t0 = Math.min(run.started_ms, ...rows.map((s) => s.started_ms));
  const now = Date.now();
  const t1 = Math.max(...rows.map((s) => s.ended_ms || now), run.ended_ms || (run.active ? now : t0 + 1), t0 + 1);
  const W = 560, L = 180, RH = 20;
  const x = (t) => L + (W * (t - t0)) / (t1 - t0);
  const s = svg("svg", { id: "timeline", class: "timeline", width: L + W + 300, height: rows.length * RH + 24 });
  rows.forEach((r, i) => {
    const y = i * RH + 4;
    const end = r.ended_ms || now;
    const w = Math.max(r.state === "cached" ? 2 : 3, x(end) - x(r.started_ms));
    const g = svg("g", { class: "bar", "data-step": r.step, "data-state": r.state });
    g.append(svg("text", { x: 0, y: y + 13, fill: "#1d2433" }, r.step.length > 24 ? r.step.slice(0, 23) + "…" : r.step));
    g.append(svg("rect", { x: x(r.started_ms), y, width: w, height: RH - 6, rx: 2, fill: COLORS[r.state] || "#7a8394", opacity: 0.35 }));
    // Each attempt over the step's bar: a failed one red, the last in the step's colour.
    const tries = attempts[r.step] || [];
    for (const a of tries) {
      const aw = Math.max(2, x(a.ended_ms) - x(a.started_ms));
      g.append(svg("rect", { class: "attempt", "data-attempt": a.attempt, x: x(a.started_ms), y, width: aw, height: RH - 6, rx: 2,
        fill: a.error ? COLORS.failed : COLORS[r.state] || "#7a8394" }));
    }
    const last = tries[tries.length - 1];
    const usage = last ? [last.peak_memory_bytes ? "peak " + fmtBytes(last.peak_memory_bytes) : "", last.fuel_used !== null && last.fuel_used !== undefined ? "fuel " + fmtNum(last.fuel_used) : ""].filter(Boolean).join(" · ") : "";
    g.append(svg("text", { class: "usage", x: x(r.started_ms) + w + 4, y: y + 13, fill: "#555" },
      fmtMs(end - r.started_ms) + (tries.length > 1 ? " · " + tries.length + " attempts" : "") + (r.state === "cached" ? " · cached" : "") + (usage ? " · " + usage : "")));
    s.append(g);
  });
  s.append(svg("text", { x: L, y: rows.length * RH + 20, fill: "#555" }, "0"));
  s.append(svg("text", { x: L + W - 40, y: rows.length * RH + 20, fill: "#555" }, fmtMs(t1 - t0)));
  return s;
}

function metricsChart(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return el("p", { class: "muted" }, "no metrics");
  const max = Math.max(...entries.map(([, v]) => Math.abs(v)), 1e-12);
  // A table, so a long metric name wraps instead of running over the bar.
  return el("table", { class: "metrics" }, entries.map(([k, v]) => el("tr", {},
    el("td", { class: "metric-name" }, k),
    el("td", { class: "metric-bar" }, bar(Math.max(1, 100 * Math.abs(v) / max))),
    el("td", { class: "metric-value" }, fmtNum(v)))));
}

// A bar `pct` wide (set through the CSSOM: the page's CSP allows no inline styles).
function bar(pct) {
  const b = el("div", { class: "bar" });
  b.style.width = pct.toFixed(1) + "%";
  return b;
}

// A number as people read it: integers plainly, others to 4 significant digits.
function fmtNum(v) {
  const x = Number(v);
  if (!Number.isFinite(x)) return String(v);
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
  return Math.abs(x) >= 1e-3 && Math.abs(x) < 1e6 ? x.toPrecision(4).replace(/\.?0+$/, "") : x.toExponential(3);
}

// A step's log lines fetched so far, by run and step: each refresh asks
// only for the lines after the last one seen (a page at a time), and the
// page shows the newest MAX_SHOWN_LINES.
const logCache = new Map();
const MAX_SHOWN_LINES = 5000;

async function fetchLogs(id, step) {
  const key = id + "/" + step;
  let c = logCache.get(key) || { next: 0, live: null, lines: [] };
  const url = "/api/runs/" + id + "/steps/" + encodeURIComponent(step) + "/logs";
  for (let pages = 0; pages < 5; pages++) {
    const page = await api(url + "?limit=1000&after=" + c.next);
    if (c.live !== null && page.live !== c.live) {
      // The run ended: recorded lines are numbered anew; read them from the start.
      c = { next: 0, live: page.live, lines: [] };
      continue;
    }
    c.live = page.live;
    c.lines.push(...page.lines);
    c.next = page.next;
    if (c.lines.length > MAX_SHOWN_LINES) c.lines.splice(0, c.lines.length - MAX_SHOWN_LINES);
    if (!page.more) break;
  }
  logCache.set(key, c);
  return c;
}

async function stepDetail(id, step, into) {
  const d = await api("/api/runs/" + id + "/steps/" + encodeURIComponent(step));
  const logs = await fetchLogs(id, step);
  const rec = d.record || {};
  const pre = el("pre", { class: "logs", id: "logs" },
    logs.lines.map((l) => el("span", { class: "lvl-" + l.level }, "[" + l.attempt + "] " + l.level + " " + l.message + "\n")));
  into.replaceChildren(
    el("h2", {}, "Step " + step + " ", stateTag(d.state)),
    el("div", { class: "row" },
      el("div", { class: "card" },
        el("p", {}, "cache key: ", el("span", { class: "mono" }, rec.cache_key || "—")),
        el("p", {}, "component: ", d.source || "", " ", el("span", { class: "mono", title: rec.component || "" }, rec.component ? rec.component.slice(0, 12) : "")),
        el("p", {}, "attempts: " + (d.attempts || []).length),
        el("p", {}, "params: ", el("span", { class: "mono" }, JSON.stringify(d.params))),
        el("p", {}, "outputs: ", Object.entries(rec.outputs || {}).map(([k, v]) =>
          el("span", {}, k + " = ", el("a", { href: "#/artifacts/" + v, class: "mono" }, v.slice(0, 12)), " "))),
        rec.error ? el("p", { class: "error" }, rec.error) : null),
      el("div", { class: "card" }, el("h2", {}, "Metrics"), metricsChart(rec.metrics))),
    d.map ? await childrenList(id, step) : null,
    el("h2", {}, "Logs"), pre);
}

// A map step's children, a page at a time, each opening its own detail.
async function childrenList(id, step, after) {
  const url = "/api/runs/" + id + "/steps/" + encodeURIComponent(step) + "/children?limit=100&after=" + (after || 0);
  const page = await api(url);
  const box = el("div", { id: "children" },
    el("h2", {}, "Children (" + page.total + ")"),
    el("table", {},
      el("tr", {}, ["Child", "State", "Duration", "Error"].map((h) => el("th", {}, h))),
      page.children.map((c) => el("tr", {},
        el("td", {}, el("a", { href: "#/runs/" + id + "/steps/" + encodeURIComponent(c.name) }, c.name)),
        el("td", {}, stateTag(c.state)),
        el("td", {}, fmtMs(c.duration_ms)),
        el("td", { class: "error" }, c.error || "")))));
  const nav = el("p", { class: "muted" }, (after || 0) + 1 + "–" + page.next + " of " + page.total + " ");
  if (after) {
    const prev = el("button", { class: "secondary", id: "children-prev" }, "previous");
    prev.onclick = async (ev) => ev.currentTarget.closest("#children").replaceWith(await childrenList(id, step, Math.max(0, after - 100)));
    nav.append(prev);
  }
  if (page.more) {
    const next = el("button", { class: "secondary", id: "children-next" }, "next");
    next.onclick = async (ev) => ev.currentTarget.closest("#children").replaceWith(await childrenList(id, step, page.next));
    nav.append(next);
  }
  box.append(nav);
  return box;
}

// ---- artifacts ----------------------------------------------------------
async function pageArtifact(digest) {
  clearInterval(timer);
  const a = await api("/api/artifacts/" + digest);
  const preview = el("div", { id: "preview" });
  const rows = a.entries.map((e) => {
    // A folder opens as an artifact of its own (its tree has a digest).
    const name = e.kind === "folder" ? el("a", { href: "#/artifacts/" + e.digest, class: "folder" }, e.name + "/") : e.name;
    const cells = [el("td", {}, e.kind), el("td", {}, name), el("td", {}, e.bytes)];
    if (e.kind === "file") {
      const pv = el("button", { class: "secondary" }, "Preview");
      pv.onclick = async () => {
        try {
          const p = await api("/api/artifacts/" + a.digest + "/preview/" + encodeURIComponent(e.name));
          if (p.kind === "table") {
            const shown = Math.max(0, p.rows.length - 1);
            const of = p.total_rows === undefined ? "" : " of " + (p.truncated && p.name.endsWith(".csv") ? "more than " : "") + p.total_rows;
            document.getElementById("preview").replaceChildren(el("h2", {}, e.name),
              el("p", { class: "muted", id: "preview-count" }, shown + of + " rows"),
              el("table", {}, p.rows.map((r, i) => el("tr", {}, r.map((c) => el(i ? "td" : "th", {}, c))))));
          } else if (p.kind === "text") {
            document.getElementById("preview").replaceChildren(el("h2", {}, e.name), el("pre", { class: "logs" }, p.text));
          } else {
            document.getElementById("preview").replaceChildren(el("p", { class: "muted" }, e.name + ": " + (p.note || "binary file")));
          }
        } catch (err) { document.getElementById("preview").replaceChildren(el("p", { class: "error" }, err.message)); }
      };
      cells.push(el("td", {}, el("a", { href: "/api/artifacts/" + a.digest + "/files/" + encodeURIComponent(e.name) }, "download"), " ", pv));
    } else cells.push(el("td", {}));
    return el("tr", {}, cells);
  });
  show(
    el("h1", {}, "Artifact ", el("span", { class: "mono" }, a.digest)),
    el("p", { class: "muted" }, a.bytes + " bytes" + (a.producer ? " · made by run #" + a.producer.run + " step " + a.producer.step.step : "")),
    el("table", {}, el("tr", {}, ["Kind", "Name", "Bytes", ""].map((h) => el("th", {}, h))), rows),
    preview);
}

// ---- compare, models, schedules ------------------------------------------
async function pageCompare(q) {
  clearInterval(timer);
  const runs = new URLSearchParams(q).get("runs") || "";
  const input = el("input", { id: "compare-runs", value: runs, placeholder: "3,4" });
  const form = el("form", {}, "Runs: ", input, " ", el("button", { type: "submit" }, "Compare"));
  form.onsubmit = (ev) => { ev.preventDefault(); location.hash = "#/compare?runs=" + encodeURIComponent(input.value); };
  if (!runs) return show(el("h1", {}, "Compare runs"), form);
  const c = await api("/api/compare?runs=" + encodeURIComponent(runs));
  show(el("h1", {}, "Compare runs"), form,
    el("table", { id: "compare" },
      el("tr", {}, el("th", {}, ""), el("th", {}, ""), c.runs.map((r) => el("th", {}, el("a", { href: "#/runs/" + r.run }, "#" + r.run)))),
      c.rows.map((r) => el("tr", {}, el("td", {}, r.differs ? "*" : ""), el("td", {}, r.kind + " " + r.name),
        r.values.map((v) => el("td", {}, v === null ? "—" : typeof v === "number" ? fmtNum(v) : typeof v === "string" ? v : JSON.stringify(v))),
        // Beside the numbers, a bar per run (numeric rows).
        el("td", { class: "compare-chart" }, compareBars(r.values, c.runs))))));
}

function compareBars(values, runs) {
  const nums = values.map((v) => (typeof v === "number" ? v : null));
  if (nums.every((v) => v === null)) return null;
  const max = Math.max(...nums.map((v) => Math.abs(v || 0)), 1e-12);
  return el("div", { class: "bars" }, nums.map((v, i) => el("div", { class: "bar-row" },
    el("span", { class: "muted" }, "#" + runs[i].run + " "),
    v === null ? "—" : bar(Math.max(1, 100 * Math.abs(v) / max)))));
}

// A model version's lineage as a tree: the step that made each artifact and
// what it read, down to host files.
function lineageButton(m) {
  const b = el("button", { class: "secondary", "data-lineage": m.name + "@" + m.version }, "lineage");
  b.onclick = async () => {
    const box = document.getElementById("lineage");
    try {
      const t = await api("/api/artifacts/" + m.digest + "/lineage");
      box.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Lineage of " + m.name + "@" + m.version), el("ul", { class: "lineage" }, lineageNode("model", t))));
    } catch (e) { box.replaceChildren(el("p", { class: "error" }, e.message)); }
  };
  return b;
}

function lineageNode(label, t) {
  const o = t.origin || {};
  const what = o.kind === "step"
    ? el("span", {}, "run ", el("a", { href: "#/runs/" + o.run }, "#" + o.run), " step " + o.step + " output " + o.output + (o.component ? " · component " + String(o.component).slice(0, 12) : ""))
    : o.kind === "file" ? el("span", {}, "file " + o.path)
      : o.kind === "see_above" ? el("span", { class: "muted" }, "(shown above)") : el("span", { class: "muted" }, "(not produced by a recorded step)");
  return el("li", { "data-kind": o.kind || "" },
    el("span", { class: "mono" }, label + " "), el("a", { href: "#/artifacts/" + t.digest, class: "mono" }, String(t.digest).slice(0, 12)), " ", what,
    (t.inputs || []).length ? el("ul", {}, t.inputs.map(([name, child]) => lineageNode(name, child))) : null);
}

async function pageModels() {
  clearInterval(timer);
  const { models } = await api("/api/models");
  // Grouped per model, newest version first, with its stage's actions.
  const byName = new Map();
  for (const m of models) (byName.get(m.name) || byName.set(m.name, []).get(m.name)).push(m);
  const msg = el("p", { class: "error", id: "models-error" });
  const stageButton = (m, stage, label) => {
    const b = el("button", { class: "secondary", "data-model": m.name, "data-version": m.version, "data-stage": stage }, label);
    b.onclick = async () => {
      try {
        await api("/api/models/" + encodeURIComponent(m.name) + "/versions/" + m.version + "/stage", {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ stage }),
        });
        await pageModels();
      } catch (e) { document.getElementById("models-error").textContent = e.message; }
    };
    return b;
  };
  const groups = [...byName.entries()].map(([name, versions]) => el("div", { class: "card model", "data-model": name },
    el("h2", {}, name),
    el("table", {},
      el("tr", {}, ["Version", "Stage", "Run", "Metrics", "Artifact", ""].map((h) => el("th", {}, h))),
      versions.slice().reverse().map((m) => el("tr", { "data-version": m.version },
        el("td", {}, m.version), el("td", {}, stateTag(m.stage)),
        el("td", {}, el("a", { href: "#/runs/" + m.run }, "#" + m.run)),
        el("td", {}, Object.entries(m.metrics || {}).map(([k, v]) => k + "=" + fmtNum(v)).join(" ")),
        el("td", {}, el("a", { href: "#/artifacts/" + m.digest, class: "mono" }, String(m.digest).slice(0, 12))),
        el("td", {},
          lineageButton(m), " ",
          m.stage !== "staging" ? stageButton(m, "staging", "to staging") : null, " ",
          m.stage !== "production" ? stageButton(m, "production", "to production") : null, " ",
          m.stage !== "archived" ? stageButton(m, "archived", "archive") : null))))));
  show(el("h1", {}, "Model registry"), msg, el("div", { id: "lineage" }),
    groups.length ? groups : el("p", { class: "muted" }, "No models registered (a step with .register(\"name\") adds versions)."));
}

async function pageSchedules() {
  clearInterval(timer);
  const { schedules } = await api("/api/schedules");
  const msg = el("p", { class: "error", id: "schedules-error" });
  const toggle = (sc) => {
    const b = el("button", { class: "secondary", "data-pipeline": sc.pipeline, "data-action": sc.paused ? "resume" : "pause" }, sc.paused ? "Resume" : "Pause");
    b.onclick = async () => {
      try {
        await api("/api/schedules/" + encodeURIComponent(sc.pipeline) + "/" + (sc.paused ? "resume" : "pause"), { method: "POST" });
        await pageSchedules();
      } catch (e) { document.getElementById("schedules-error").textContent = e.message; }
    };
    return b;
  };
  show(el("h1", {}, "Schedules"), msg,
    el("table", { id: "schedules" },
      el("tr", {}, ["Pipeline", "Cron", "Time zone", "Catch-up", "Next (schedule's time zone)", "Recent slots", ""].map((h) => el("th", {}, h))),
      schedules.map((s) => el("tr", { "data-pipeline": s.pipeline },
        el("td", {}, s.pipeline, s.paused ? el("span", { class: "state st-paused", "data-state": "paused" }, "paused") : null),
        el("td", { class: "mono" }, s.schedule), el("td", {}, s.timezone),
        el("td", {}, s.catchup + (s.catchup === "all" ? " (≤" + s.catchup_limit + ")" : "")),
        el("td", {}, (s.next_local || s.next).map((t) => el("div", {}, t))),
        el("td", {}, s.recent.map((r) => el("div", {}, r.slot + " " + r.state + " ",
          r.run ? el("a", { href: "#/runs/" + r.run }, "#" + r.run) : null,
          r.reason ? " (" + r.reason + ")" : ""))),
        el("td", {}, toggle(s), " ", backfillForm(s, msg))))),
    schedules.length ? null : el("p", { class: "muted" }, "No pipeline declares a schedule."),
    el("p", { class: "muted" }, "Backfill runs the past slots in a range, oldest first, one after another (at most 100; `weir backfill` has no such bound)."));
}

// Past slots of a schedule, run from the page.
function backfillForm(sc, msg) {
  const day = (d) => new Date(d).toISOString().slice(0, 10);
  const from = el("input", { type: "date", name: "from", value: day(Date.now() - 2 * 86400000), "aria-label": "from" });
  const to = el("input", { type: "date", name: "to", value: day(Date.now() - 86400000), "aria-label": "to" });
  const f = el("form", { class: "backfill", "data-pipeline": sc.pipeline }, from, " ", to, " ",
    el("button", { type: "submit", class: "secondary" }, "Backfill"));
  // Handlers read the live page (an update in place keeps the elements on
  // screen, not the ones this render made).
  f.onsubmit = async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const m = document.getElementById("schedules-error");
    try {
      const r = await api("/api/schedules/" + encodeURIComponent(sc.pipeline) + "/backfill", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ from: form.elements.from.value, to: form.elements.to.value + "T23:59:59Z" }),
      });
      m.className = "muted";
      m.textContent = sc.pipeline + ": " + r.slots.length + " slot(s) to backfill";
    } catch (e) { m.className = "error"; m.textContent = e.message; }
  };
  return f;
}

// ---- workers ------------------------------------------------------------
async function pageWorkers() {
  clearInterval(timer);
  const render = async () => {
    const w = await api("/api/workers");
    show(el("h1", {}, "Workers"),
      w.cluster
        ? el("p", { id: "queue-depth" }, "Queue: " + w.queued + " waiting, " + w.running + " running")
        : el("p", { class: "muted", id: "queue-depth" }, "Not a cluster: the records are not in PostgreSQL, so every step runs in this server."),
      w.workers.length ? el("table", { id: "workers" },
        el("tr", {}, ["Worker", "State", "Tags", "Slots", "Last heartbeat", "Running"].map((h) => el("th", {}, h))),
        w.workers.map((x) => el("tr", { "data-worker": x.name },
          el("td", { class: "mono" }, x.name),
          el("td", {}, el("span", { class: "state st-" + x.state, "data-state": x.state }, x.state)),
          el("td", {}, x.tags.length ? x.tags.join(", ") : "-"),
          el("td", {}, String(x.jobs)),
          el("td", {}, fmtMs(Math.max(0, Date.now() - x.heartbeat_ms)) + " ago"),
          el("td", {}, x.running.map((u) => el("div", {},
            u.run ? el("a", { href: "#/runs/" + u.run + "/steps/" + encodeURIComponent(u.step) }, u.step + " (#" + u.run + ")") : u.step)))))) :
        (w.cluster ? el("p", { class: "muted" }, "No worker heard of in the last hour: start one with weir worker.") : null));
  };
  await render();
  every(2000, render);
}

// ---- routing ------------------------------------------------------------
async function route() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, q] = h.split("?");
  const m = path.split("/").filter(Boolean);
  try {
    if (m.length === 0) return await pageRuns(q || "");
    if (m[0] === "pipelines" && m[1]) return await pagePipeline(decodeURIComponent(m[1]));
    if (m[0] === "pipelines") return await pagePipelines();
    if (m[0] === "runs" && m[1] && m[2] === "steps" && m[3]) return await pageRun(m[1], decodeURIComponent(m[3]));
    if (m[0] === "runs" && m[1]) return await pageRun(m[1]);
    if (m[0] === "artifacts" && m[1]) return await pageArtifact(m[1]);
    if (m[0] === "compare") return await pageCompare(q || "");
    if (m[0] === "models") return await pageModels();
    if (m[0] === "schedules") return await pageSchedules();
    if (m[0] === "workers") return await pageWorkers();
    show(el("p", {}, "Unknown page."));
  } catch (e) { fail(e); }
}

window.addEventListener("hashchange", route);
route();
