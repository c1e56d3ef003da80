"""The HTML page of ``sluice status --serve``: one self-contained document, nothing fetched elsewhere.

In: the status as JSON (``Status.as_dict``) and a refresh period.
Out: HTML whose inline script draws, from the JSON embedded in the page, the figures as SVG charts
and tables (events per minute per source, dead letters by reason, window metrics, last commit per
table), then re-reads ``/status.json`` from the same server every ``refresh`` seconds.
Why inline: the page must render with no network (no CDN, no font, no script from elsewhere), and
drawing from embedded data makes the first render complete at the page's load event.
Every figure element carries ``data-*`` attributes naming what it shows (source, figure, reason),
so a test reading the rendered DOM finds them without depending on the layout.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_page"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#1d2733;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}
.muted{color:#5b6b7b}.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.card{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:10px 14px;min-width:240px}
.card b{font-size:18px}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d8dee4;padding:3px 8px;text-align:right}th{background:#eef2f5}
td:first-child,th:first-child{text-align:left}svg{background:#fff;border:1px solid #d8dee4}
.bar{fill:#3b7dd8}.bar5xx{fill:#d8453b}.line{fill:none;stroke:#3b7dd8;stroke-width:2}
.axis{font-size:10px;fill:#5b6b7b}
</style></head>
<body>
<h1>Sluice status</h1>
<div class="muted">generated <span id="generated"></span>; refreshes every __REFRESH__ s;
last <span id="minutes"></span> minutes with data</div>
<h2>Sources</h2><div id="sources" class="grid"></div>
<h2>Events per minute (ingest time)</h2><div id="rates" class="grid"></div>
<h2>Dead letters by reason</h2><div id="dead-letters" class="grid"></div>
<h2>Window metrics (per 1-minute event-time window)</h2><div id="windows" class="grid"></div>
<h2>Last commit per table</h2><div id="tables"></div>
<script id="status-data" type="application/json">__DATA__</script>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function fmt(x, digits) {
  if (x === null || x === undefined) return "-";
  return typeof x === "number" ? x.toFixed(digits === undefined ? 0 : digits) : String(x);
}
function chart(title, points, key, cls, attrs) {
  // points: [[minute, value], ...] drawn as bars; the maximum, and the first and last minutes on
  // the axes.
  const w = 320, h = 120, pad = 24, n = Math.max(points.length, 1);
  const max = Math.max(1, ...points.map(p => p[1]));
  const box = el("div", Object.assign({"class": "card", "data-chart": key}, attrs || {}));
  box.append(el("div", {}, title));
  const svg = el("svg:svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img"});
  svg.append(el("svg:title", {}, title));
  const bw = (w - pad) / n;
  points.forEach(([label, value], i) => {
    const bh = (h - 2 * pad) * value / max;
    const r = el("svg:rect", {"class": cls || "bar", x: pad + i * bw, y: h - pad - bh,
      width: Math.max(bw - 1, 1), height: bh, "data-series": key, "data-label": label,
      "data-value": value});
    r.append(el("svg:title", {}, `${label}: ${value}`));
    svg.append(r);
  });
  svg.append(el("svg:text", {"class": "axis", x: 2, y: pad - 6}, fmt(max)));
  svg.append(el("svg:text", {"class": "axis", x: 2, y: h - pad + 14}, "0"));
  if (points.length) {
    svg.append(el("svg:text", {"class": "axis", x: pad, y: h - 4}, points[0][0].slice(11, 16)));
    svg.append(el("svg:text", {"class": "axis", x: w - 40, y: h - 4},
      points[points.length - 1][0].slice(11, 16)));
  }
  box.append(svg);
  return box;
}
function hbars(title, points, key, cls) {
  // points: [[name, value], ...], one labelled horizontal bar each, with its value.
  const w = 420, row = 20, label = 130, pad = 6, h = pad * 2 + row * Math.max(points.length, 1);
  const max = Math.max(1, ...points.map(p => p[1]));
  const box = el("div", {"class": "card", "data-chart": key});
  box.append(el("div", {}, title));
  const svg = el("svg:svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img"});
  svg.append(el("svg:title", {}, title));
  points.forEach(([name, value], i) => {
    const y = pad + i * row, bw = (w - label - 60) * value / max;
    svg.append(el("svg:text", {"class": "axis", x: 4, y: y + 14}, name));
    const r = el("svg:rect", {"class": cls, x: label, y: y + 3, width: Math.max(bw, 1),
      height: row - 6, "data-series": key, "data-label": name, "data-value": value});
    r.append(el("svg:title", {}, `${name}: ${value}`));
    svg.append(r);
    svg.append(el("svg:text", {"class": "axis", x: label + bw + 4, y: y + 14}, fmt(value)));
  });
  box.append(svg);
  return box;
}
function table(head, rows, rowAttrs) {
  const t = el("table");
  const tr = el("tr");
  head.forEach(hd => tr.append(el("th", {}, hd)));
  t.append(tr);
  rows.forEach((row, i) => {
    const r = el("tr", rowAttrs ? rowAttrs[i] : {});
    row.forEach(([value, attrs]) => r.append(el("td", attrs || {}, value)));
    t.append(r);
  });
  return t;
}
function render(s) {
  document.getElementById("generated").textContent = s.generated_at;
  document.getElementById("minutes").textContent = s.minutes;
  const sources = document.getElementById("sources");
  sources.replaceChildren(...s.sources.map(src => {
    const c = el("div", {"class": "card", "data-source": src.source});
    c.append(el("div", {}, `${src.source} (${src.table})`));
    const figure = (label, key, value) => {
      const line = el("div", {}, label + ": ");
      line.append(el("b", {"data-source": src.source, "data-figure": key}, value));
      c.append(line);
    };
    figure("events", "events", src.events);
    figure("events/min", "rate_per_minute", fmt(src.rate_per_minute, 1));
    figure("lag (s)", "lag_seconds", fmt(src.lag_seconds, 1));
    figure("edge to table (s)", "commit_delay_seconds", fmt(src.commit_delay_seconds, 1));
    return c;
  }));
  document.getElementById("rates").replaceChildren(...s.sources.map(src =>
    chart(`${src.source}: events per minute`, src.per_minute, "events-" + src.source, "bar",
          {"data-source": src.source})));
  const letters = s.dead_letters;
  const dl = document.getElementById("dead-letters");
  if (!letters.length) {
    dl.replaceChildren(el("div", {"class": "muted", "data-figure": "no-dead-letters"}, "none"));
  } else {
    const byReason = {};
    letters.forEach(d => { byReason[d.reason] = (byReason[d.reason] || 0) + d.count; });
    dl.replaceChildren(
      hbars("dead letters by reason", Object.entries(byReason).sort((a, b) => b[1] - a[1]),
            "dead-letters", "bar5xx"),
      table(["source", "stage", "reason", "count"],
        letters.map(d => [[d.source], [d.stage], [d.reason], [d.count, {"data-figure": "count"}]]),
        letters.map(d => ({"data-dead-letter": "", "data-source": d.source,
                           "data-stage": d.stage, "data-reason": d.reason}))));
  }
  const windows = document.getElementById("windows");
  const charts = [];
  for (const [name, points] of Object.entries(s.windows)) {
    const keys = points.length ? Object.keys(points[0].values) : [];
    keys.forEach(k => charts.push(chart(`${name}: ${k}`,
      points.map(p => [p.window_start, p.values[k]]), `${name}-${k}`,
      k === "errors_5xx" ? "bar5xx" : "bar",
      {"data-window-table": name, "data-metric": k,
       "data-total": points.reduce((a, p) => a + p.values[k], 0)})));
  }
  windows.replaceChildren(...charts);
  document.getElementById("tables").replaceChildren(table(
    ["table", "rows", "snapshots", "data files", "last commit", "operation", "rows added",
     "age (s)", "positions"],
    s.tables.map(t => [[t.table], [t.rows, {"data-figure": "rows"}], [t.snapshots],
      [t.data_files], [t.last_commit ? t.last_commit.slice(0, 19).replace("T", " ") : "-"], [t.last_operation || "-"],
      [t.rows_added, {"data-figure": "rows_added"}], [fmt(t.commit_age_seconds, 1)],
      [Object.entries(t.positions).map(([k, v]) => `${k}: ${v}`).join(", ") || "-"]]),
    s.tables.map(t => ({"data-table": t.table}))));
}
render(JSON.parse(document.getElementById("status-data").textContent));
setInterval(() => {
  fetch("/status.json").then(r => r.ok ? r.json() : null).then(s => { if (s) render(s); })
    .catch(() => {});
}, __REFRESH__ * 1000);
</script>
</body></html>
"""


def render_page(data: dict[str, Any], refresh_seconds: int) -> str:
    """The page with ``data`` embedded (``<`` escaped, so no value can end the script element)."""
    embedded = json.dumps(data).replace("<", "\\u003c")
    return _PAGE.replace("__REFRESH__", str(refresh_seconds)).replace("__DATA__", embedded)
