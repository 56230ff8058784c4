// The relay console: polls /-/console/state (every 2 s) and /-/rejections, draws it all, runs the
// mapping playground. Vanilla JS, no build step. Every text from the relay goes in through
// textContent (records are untrusted input), never as markup.
"use strict";

const POLL_MS = 2000;
const REJECTIONS_MS = 5000;
const HEADERS = {"X-Relay-Console": "1"};  // the server refuses cookie-only POSTs without it
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let state = null;
let rejections = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// ---- formatting ---------------------------------------------------------------------------------

function rate(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (v >= 100) return Math.round(v).toLocaleString("en");
  return v.toFixed(1);
}
function count(v) { return v >= 1e6 ? (v / 1e6).toFixed(2) + "M" : Math.round(v).toLocaleString("en"); }
function bytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? Math.round(v) : v.toFixed(1)) + " " + units[i];
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return s <= 0 ? "0s" : "<1s";
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + String(Math.round(s % 60)).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}
function ago(at) { return state ? duration(Math.max(0, state.now - at)) + " ago" : ""; }
function clock(at) {
  if (typeof at === "string") return at;  // already a time as text
  return new Date(at * 1000).toISOString().slice(11, 19) + "Z";
}
const STATE_WORDS = {running: "running", backing_off: "backing off", paused: "paused", stopped: "stopped"};

// ---- charts -------------------------------------------------------------------------------------

// A 15-minute time series: lines (rates) over a fixed window ending now, y from 0 to the max seen.
function chart(series, lines, now, windowS) {
  const W = 600, H = 92, top = 6, bottom = 16, left = 44, right = 44;
  const root = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img"});
  const t = series.t || [];
  const scale = (side) => {
    let max = 0;
    for (const line of lines) if (!!line.right === side) for (const v of series[line.key] || []) max = Math.max(max, v);
    return max > 0 ? max * 1.15 : 1;
  };
  const maxLeft = scale(false), maxRight = scale(true);
  const x = (at) => left + (W - left - right) * (1 - (now - at) / windowS);
  const y = (v, max) => top + (H - top - bottom) * (1 - v / max);
  for (const frac of [0, 0.5, 1]) {
    root.append(svg("line", {x1: left, x2: W - right, y1: y(maxLeft * frac, maxLeft), y2: y(maxLeft * frac, maxLeft),
                             stroke: "#243140", "stroke-width": 1}));
  }
  const text = (value, attrs) => { const node = svg("text", attrs); node.textContent = value; root.append(node); };
  text(rate(maxLeft / 1.15) + "/s", {x: 0, y: top + 9});
  if (lines.some((l) => l.right)) text(count(maxRight / 1.15), {x: W - right + 4, y: top + 9, class: "right"});
  for (const [i, label] of [[0, "-15m"], [1, "-10m"], [2, "-5m"], [3, "now"]]) {
    text(label, {x: left + (W - left - right) * i / 3 - (i === 3 ? 22 : 0), y: H - 2});
  }
  for (const line of lines) {
    const values = series[line.key] || [];
    if (!values.length) continue;
    const max = line.right ? maxRight : maxLeft;
    const pts = t.map((at, i) => `${x(at).toFixed(1)},${y(values[i], max).toFixed(1)}`);
    if (line.fill) {
      const base = y(0, max).toFixed(1);
      root.append(svg("path", {d: `M${x(t[0]).toFixed(1)},${base} L${pts.join(" L")} L${x(t[t.length - 1]).toFixed(1)},${base} Z`,
                               fill: line.color, "fill-opacity": 0.15, stroke: "none"}));
    }
    const attrs = {points: pts.join(" "), fill: "none", stroke: line.color, "stroke-width": 2,
                   "vector-effect": "non-scaling-stroke", "stroke-linejoin": "round"};
    if (line.right) attrs["stroke-dasharray"] = "5 4";
    root.append(svg("polyline", attrs));
  }
  return root;
}

function legend(lines) {
  return el("div", {class: "legend"}, lines.map((l) => el("span", {}, el("i", {class: "swatch-" + l.key}), l.label)));
}

function figure(label, value, cls, big) {
  return el("div", {class: "figure " + (cls || ""), "data-figure": label}, el("div", {class: "v" + (big ? " big" : "")}, value),
            el("div", {class: "l"}, label));
}

// ---- panels -------------------------------------------------------------------------------------

const SOURCE_LINES = [
  {key: "accepted", label: "accepted/s", color: "#3fb950", fill: true},
  {key: "repairs", label: "repairs/s", color: "#e3a72f"},
  {key: "rejected", label: "rejected/s", color: "#f85149"},
  {key: "filtered", label: "filtered/s", color: "#8593a3"},
];
const SINK_LINES = [
  {key: "delivered", label: "delivered/s", color: "#58a6ff", fill: true},
  {key: "upstream_rejected", label: "upstream rejected/s", color: "#f85149"},
  {key: "backlog", label: "backlog (right scale)", color: "#e3a72f", right: true},
];

function stat(label, value, cls) {
  return el("span", {class: "stat " + (cls || ""), "data-figure": label}, el("b", {}, value), " " + label);
}

function sourceCard(src) {
  const r = src.rates;
  const top = (rejectionTop(src.name) || src.top).slice(0, 4);
  return el("div", {class: "card", "data-state": "source", "data-source": src.name},
    el("div", {class: "card-head"}, el("span", {class: "name"}, src.name),
       el("span", {class: "sub"}, "mapping " + src.mapping + (src.host ? " · host " + src.host : ""))),
    el("div", {class: "figures"},
       figure("accepted/s", rate(r.accepted), r.accepted ? "good" : "zero", true),
       figure("requests/s", rate(r.requests), r.requests ? "info" : "zero"),
       figure("repairs/s", rate(r.repairs), r.repairs ? "warn" : "zero"),
       figure("rejected/s", rate(r.rejected), r.rejected ? "bad" : "zero"),
       figure("filtered/s", rate(r.filtered), "zero")),
    el("div", {class: "stats"},
       stat("accepted total", count(src.totals.accepted), "good"),
       stat("rejected", count(src.totals.rejected), src.totals.rejected ? "bad" : ""),
       stat("repairs", count(src.totals.repairs), src.totals.repairs ? "warn" : ""),
       stat("filtered", count(src.totals.filtered), "")),
    chart(src.series, SOURCE_LINES, state.now, state.window), legend(SOURCE_LINES),
    top.length ? el("ul", {class: "reasons"}, el("li", {class: "muted"}, el("span", {}, "top rejection reasons"),
                                                  el("span", {}, "last 15 min")),
      top.map((t) => el("li", {},
        el("span", {}, t.field ? `${t.field}: ${t.reason}` : t.reason), el("b", {}, count(t.count))))) : null);
}

function sinkCard(sink) {
  const r = sink.rates, b = sink.backlog;
  const errorLine = sink.error ? el("div", {class: "error"}, "⚠ " + sink.error)
    : sink.last_failure ? el("div", {class: "error old"}, "last error " + ago(sink.last_failure.at) + ": " + sink.last_failure.error)
    : el("div", {class: "error old"}, "no upstream error since start");
  const drain = sink.drain_seconds === null ? (b.entries > 0 ? "stalled" : "–") : duration(sink.drain_seconds);
  return el("div", {class: "card", "data-state": sink.state, "data-sink": sink.name},
    el("div", {class: "card-head"}, el("span", {class: "name"}, sink.name), el("span", {class: "sub"}, sink.url),
       el("span", {class: "pill sink-state", "data-state": sink.state}, STATE_WORDS[sink.state] || sink.state)),
    errorLine,
    el("div", {class: "figures"},
       figure("delivered/s", rate(r.delivered), r.delivered ? "info" : "zero", true),
       figure("backlog", count(b.entries), b.entries > 0 ? (sink.state === "running" ? "" : "warn") : "zero"),
       figure("queued", bytes(b.bytes), b.bytes > 0 ? "" : "zero"),
       figure("oldest", duration(b.oldest_age), b.oldest_age > 60 ? "warn" : b.oldest_age > 0 ? "" : "zero"),
       figure("drains in", drain, drain === "stalled" ? "bad" : "zero")),
    el("div", {class: "stats"},
       stat("delivered total", count(sink.totals.delivered), "info"),
       stat("upstream rejected", count(sink.totals.upstream_rejected), sink.totals.upstream_rejected ? "bad" : ""),
       stat("dead letters", count(sink.dead_letters), sink.dead_letters ? "violet" : "")),
    chart(sink.series, SINK_LINES, state.now, state.window), legend(SINK_LINES));
}

function rejectionTop(source) {
  if (!rejectionsTop) return null;
  const top = rejectionsTop[source];
  return top && top.length ? top : null;
}
let rejectionsTop = null;

function drawHeader() {
  $("version").textContent = "v" + state.version;
  const ready = $("ready");
  ready.dataset.state = state.ready ? "ready" : "not ready";
  ready.textContent = state.ready ? "ready" : "not ready";
  $("uptime").textContent = duration(state.uptime);
  const rl = state.reload;
  $("reload").textContent = (rl.result === "started" ? "started " : rl.result + " ") + ago(rl.at);
  $("reload").title = clock(rl.at) + ": " + rl.detail;
  $("reload").className = rl.result === "refused" ? "bad-text" : "";
  $("dead").textContent = count(state.dead_letters.entries) + " · " + bytes(state.dead_letters.bytes);
  const d = state.disk, used = d.max ? d.used / d.max : 0;
  $("disk-text").textContent = bytes(d.used) + " / " + bytes(d.max);
  const bar = $("disk-bar");
  bar.style.width = Math.min(100, used * 100).toFixed(1) + "%";
  bar.className = used > 0.9 ? "bad" : used > 0.7 ? "warn" : "";
  $("disk-free").textContent = bytes(d.free) + " free";
  $("updated").textContent = "updated " + clock(state.now);
  const problems = $("problems");
  problems.hidden = !state.problems.length;
  problems.textContent = state.problems.join(" · ");
}

function draw() {
  drawHeader();
  $("sources").replaceChildren(...state.sources.map(sourceCard));
  $("sinks").replaceChildren(...state.sinks.map(sinkCard));
  const select = $("map-mapping");
  if (select.options.length !== state.mappings.length) {
    const chosen = select.value || (state.sources[0] && state.sources[0].mapping);
    select.replaceChildren(...state.mappings.map((m) => el("option", {value: m}, m)));
    if (chosen) select.value = chosen;
  }
  const sources = $("rej-source");
  if (sources.options.length !== state.sources.length + 1) {
    const chosen = sources.value;
    sources.replaceChildren(el("option", {value: ""}, "all"), ...state.sources.map((s) => el("option", {value: s.name}, s.name)));
    sources.value = chosen;
  }
}

async function poll() {
  try {
    const response = await fetch("/-/console/state", {headers: HEADERS, cache: "no-store"});
    if (response.status === 401 || response.status === 403) { location.href = "/-/console"; return; }
    state = await response.json();
    $("banner").hidden = true;
    draw();
  } catch (err) {
    $("banner").hidden = false;
    $("banner").textContent = "the relay does not answer (" + err.message + "); retrying…";
    $("ready").dataset.state = "offline";
    $("ready").textContent = "offline";
  }
}

// ---- recent rejections and replay -----------------------------------------------------------------

async function pollRejections() {
  if (!state || !state.rejections) return;
  const source = $("rej-source").value;
  try {
    const response = await fetch("/-/rejections?limit=50" + (source ? "&source=" + encodeURIComponent(source) : ""),
                                 {headers: HEADERS, cache: "no-store"});
    if (!response.ok) return;
    const body = await response.json();
    rejections = body.rejections || [];
    rejectionsTop = body.top || null;
    drawRejections(body.stored || {});
  } catch (err) { /* the state poll shows the relay as offline */ }
}

function drawRejections(stored) {
  const list = $("rejections");
  if (!rejections.length) {
    list.replaceChildren(el("li", {class: "muted"}, "No rejected records recently."));
  } else {
    list.replaceChildren(...rejections.map((rej, i) => el("li", {class: "rejection"},
      el("div", {class: "what"},
         el("span", {class: "reason"}, (rej.field ? rej.field + ": " : "") + rej.reason),
         el("span", {}, rej.message),
         el("button", {type: "button", class: "small", onclick: () => tryRecord(rej)}, "try in playground")),
      el("div", {class: "meta"}, clock(rej.time) + " · source " + rej.source + " · record #" + rej.index),
      el("pre", {class: "record"}, JSON.stringify(rej.record)))));
  }
  const parts = Object.entries(stored).map(([name, s]) =>
    `${name}: ${count(s.records)} stored (${bytes(s.bytes)})` + (s.dropped ? `, ${count(s.dropped)} dropped` : ""));
  $("stored").textContent = parts.length ? "kept for replay: " + parts.join(" · ") : "";
}

async function replay() {
  const source = $("rej-source").value;
  const button = $("replay"), out = $("replay-result");
  button.disabled = true;
  out.textContent = "replaying…";
  try {
    const response = await fetch("/-/rejections/replay" + (source ? "?source=" + encodeURIComponent(source) : ""),
                                 {method: "POST", headers: HEADERS});
    const body = await response.json();
    if (!response.ok) {
      out.className = "small reason"; out.textContent = body.error || "replay failed (" + response.status + ")";
    } else {
      const reasons = Object.entries(body.reasons || {}).map(([k, n]) => `${k} ×${n}`).join(", ");
      out.className = "small " + (body.still_rejected ? "rep" : "ok");
      out.textContent = `replayed ${count(body.replayed)}: ${count(body.accepted)} accepted, ` +
        `${count(body.still_rejected)} still rejected` + (reasons ? ` (${reasons})` : "");
    }
  } catch (err) {
    out.textContent = "replay failed: " + err.message;
  } finally {
    button.disabled = false;
    pollRejections();
  }
}

// ---- mapping playground -----------------------------------------------------------------------------

function tryRecord(rej) {
  $("map-records").value = JSON.stringify(rej.record, null, 2);
  const source = state && state.sources.find((s) => s.name === rej.source);
  if (source) {
    $("map-mapping").value = source.mapping;
    $("map-host").value = source.host || "";
  }
  $("playground").scrollIntoView({behavior: "smooth"});
}

async function runMap(event) {
  event.preventDefault();
  const out = $("map-output"), summary = $("map-summary");
  summary.className = "small muted";
  summary.textContent = "mapping…";
  try {
    const response = await fetch("/-/console/map", {method: "POST", headers: {...HEADERS, "Content-Type": "application/json"},
      body: JSON.stringify({mapping: $("map-mapping").value, host: $("map-host").value || null,
                            records: $("map-records").value})});
    const body = await response.json();
    if (!response.ok) {
      summary.className = "small reason"; summary.textContent = body.error; out.replaceChildren(); return;
    }
    const s = body.summary;
    summary.className = "small";
    summary.textContent = `${s.records} records: ${s.entries} entries (${s.repaired} repaired), ` +
      `${s.rejected} rejected, ${s.filtered} filtered` +
      (s.never_filled.length && s.entries ? ` · never filled: ${s.never_filled.join(", ")}` : "");
    out.replaceChildren(...body.records.map((row) => el("li", {class: "map-row", "data-status": row.status},
      el("div", {class: "what"},
         el("span", {class: row.status === "rejected" ? "reason" : row.status === "repaired" ? "rep" : "ok"},
            "#" + row.index + " " + row.status),
         row.status === "rejected" ? el("span", {}, row.error) : null,
         row.repaired && row.repaired.length ? el("span", {class: "meta"}, "repaired: " + row.repaired.join(", ")) : null,
         row.missing && row.missing.length ? el("span", {class: "meta"}, "missing: " + row.missing.join(", ")) : null),
      row.entry ? el("pre", {class: "entry"}, JSON.stringify(row.entry)) : null)));
  } catch (err) {
    summary.textContent = "mapping failed: " + err.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("replay").addEventListener("click", replay);
  $("rej-source").addEventListener("change", pollRejections);
  $("map-form").addEventListener("submit", runMap);
  poll().then(pollRejections);
  setInterval(poll, POLL_MS);
  setInterval(pollRejections, REJECTIONS_MS);
});
