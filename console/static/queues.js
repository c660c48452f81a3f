// The queues page, live: a `stats` server-sent event every few seconds carries every model's
// numbers; the page rewrites its cells and takes the throughput from the jobs delivered
// between reads (kept here, per model, for the last WINDOW_MS). Values go in with textContent.
"use strict";
(function () {
  const sections = new Map();
  document.querySelectorAll("section.queue").forEach((s) => sections.set(s.dataset.model, s));
  if (!sections.size) return;
  const WINDOW_MS = 5 * 60 * 1000;
  const reads = new Map();  // model -> [{t: ms, delivered: [high, normal, low]}]
  const live = document.getElementById("live");

  function set(root, field, text) {
    const el = root.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = String(text);
  }

  // Jobs/s of level i between the first and the last read of the window (null: one read).
  function rate(ring, i) {
    const a = ring[0], b = ring[ring.length - 1];
    return ring.length < 2 || b.t <= a.t ? null : (b.delivered[i] - a.delivered[i]) * 1000 / (b.t - a.t);
  }

  function remember(m) {
    const delivered = m.levels.map((l) => l.delivered_total);
    let ring = reads.get(m.model) || [];
    const last = ring[ring.length - 1];
    // A counter that went down (Redis could not tell for a moment): start again from here.
    if (last && delivered.some((d, i) => d < last.delivered[i])) ring = [];
    if (!last || m.read_ms > last.t) ring.push({ t: m.read_ms, delivered });
    while (ring.length > 2 && ring[ring.length - 1].t - ring[0].t > WINDOW_MS) ring.shift();
    reads.set(m.model, ring);
    return ring;
  }

  function chart(section, ring) {
    const svg = section.querySelector("svg.rate-chart");
    const now = ring[ring.length - 1].t, points = [];
    for (let j = 1; j < ring.length; j++) {
      const dt = (ring[j].t - ring[j - 1].t) / 1000;
      const jobs = ring[j].delivered.reduce((s, d, i) => s + d - ring[j - 1].delivered[i], 0);
      points.push([(ring[j].t - now) / 1000, jobs / dt]);
    }
    drawLineChart(svg, [{ points, dots: points.length < 3 }],
      { xLabel: "seconds (0 = now)", yLabel: "jobs delivered / s", yMin: 0,
        empty: "measuring: two reads needed" });
  }

  function onStats(data) {
    for (const m of data.models) {
      const section = sections.get(m.model);
      if (!section) continue;  // a model registered since the page loaded: shown on reload
      ["serving_workers", "dead_letters", "delayed"].forEach((f) => set(section, f, m[f]));
      const ring = remember(m);
      const span = ring.length > 1 ? Math.round((ring[ring.length - 1].t - ring[0].t) / 1000) : 0;
      m.levels.forEach((l, i) => {
        const row = section.querySelector('tr[data-level="' + l.level + '"]');
        if (!row) return;
        ["waiting", "leased", "delivered_total", "tenant_backlog"].forEach((f) => set(row, f, l[f]));
        set(row, "oldest_age_s", l.oldest_age_s.toFixed(1) + " s");
        const r = rate(ring, i);
        set(row, "rate", r === null ? "measuring…" : r.toFixed(2) + " (over " + span + " s)");
      });
      chart(section, ring);
    }
    live.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  }

  sections.forEach((s) => chart(s, [{ t: 0, delivered: [0, 0, 0] }]));
  const source = new EventSource("/queues/events");
  source.addEventListener("stats", (m) => onStats(JSON.parse(m.data)));
  source.addEventListener("error", (m) => {
    if (m.data) { source.close(); const e = JSON.parse(m.data); live.textContent = e.code + ": " + e.message; }
  });
})();
