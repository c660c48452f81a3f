// Line and bar charts drawn as SVG, with axes, ticks and units. Text goes in with
// textContent only: no value from the server is ever parsed as markup.
"use strict";
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { w: 480, h: 260, left: 56, right: 14, top: 14, bottom: 42 };

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function fmt(v) {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toPrecision(2) : String(+v.toFixed(3));
}

// series: [{points: [[x, y], ...], dots: bool}],
// opts: {xLabel, yLabel, yMin, yMax, integerX (ticks on whole numbers only), empty}
function drawLineChart(svg, series, opts) {
  const h = svg.viewBox.baseVal.height || CHART.h;
  const c = Object.assign({}, CHART, { h });
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    svg.appendChild(svgEl("text", { x: c.w / 2, y: h / 2, "text-anchor": "middle" }, opts.empty || "no data yet"));
    return;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 === x0) { x1 = x0 + 1; }
  const y0 = opts.yMin !== undefined ? opts.yMin : Math.min(0, ...ys);
  let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
  if (y1 <= y0) { y1 = y0 + 1; }
  const px = (x) => c.left + (x - x0) / (x1 - x0) * (c.w - c.left - c.right);
  const py = (y) => h - c.bottom - (y - y0) / (y1 - y0) * (h - c.top - c.bottom);
  const xTicks = niceTicks(x0, x1, 6).filter((t) => !opts.integerX || Number.isInteger(t));
  axes(svg, c, h, xTicks, niceTicks(y0, y1, 5), px, py, opts);
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + px(p[0]).toFixed(1) + " " + py(p[1]).toFixed(1)).join(" ");
    svg.appendChild(svgEl("path", { d, class: "series-" + i }));
    if (s.dots) s.points.forEach((p) => svg.appendChild(svgEl("circle", { cx: px(p[0]), cy: py(p[1]), r: 3, class: "dot-" + i })));
    if (s.label) svg.appendChild(svgEl("text", { x: c.w - c.right, y: c.top + 12 + 14 * i, "text-anchor": "end", class: "dot-" + i }, s.label));
  });
}

function axes(svg, c, h, xTicks, yTicks, px, py, opts) {
  for (const t of yTicks) {
    svg.appendChild(svgEl("line", { x1: c.left, x2: c.w - c.right, y1: py(t), y2: py(t), class: "grid" }));
    svg.appendChild(svgEl("text", { x: c.left - 6, y: py(t) + 4, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of xTicks) {
    svg.appendChild(svgEl("text", { x: px(t), y: h - c.bottom + 16, "text-anchor": "middle" }, fmt(t)));
  }
  svg.appendChild(svgEl("line", { x1: c.left, x2: c.w - c.right, y1: h - c.bottom, y2: h - c.bottom, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: c.left, x2: c.left, y1: c.top, y2: h - c.bottom, class: "axis" }));
  svg.appendChild(svgEl("text", { x: (c.left + c.w - c.right) / 2, y: h - 6, "text-anchor": "middle" }, opts.xLabel));
  svg.appendChild(svgEl("text", { x: 12, y: (c.top + h - c.bottom) / 2, "text-anchor": "middle",
    transform: "rotate(-90 12 " + (c.top + h - c.bottom) / 2 + ")" }, opts.yLabel));
}

// values: [v0, v1, ...] as bars over their index; the largest highlighted.
function drawBarChart(svg, values, opts) {
  const h = svg.viewBox.baseVal.height || CHART.h;
  const c = Object.assign({}, CHART, { h });
  svg.replaceChildren();
  if (!values.length) return;
  const n = values.length, y1 = opts.yMax || Math.max(...values, 1e-9);
  const slot = (c.w - c.left - c.right) / n;
  const px = (i) => c.left + slot * i;
  const py = (y) => h - c.bottom - y / y1 * (h - c.top - c.bottom);
  axes(svg, c, h, [], niceTicks(0, y1, 4), px, py, opts);
  const top = values.indexOf(Math.max(...values));
  values.forEach((v, i) => {
    svg.appendChild(svgEl("rect", { x: px(i) + slot * 0.15, y: py(v), width: slot * 0.7,
      height: Math.max(0, h - c.bottom - py(v)), class: i === top ? "bar top" : "bar" }));
    svg.appendChild(svgEl("text", { x: px(i) + slot / 2, y: h - c.bottom + 16, "text-anchor": "middle" }, i));
  });
}
