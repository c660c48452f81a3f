// A training job's page, live: the job's events arrive as server-sent events (replayed from
// the first, then as they happen) and grow the loss and accuracy curves, the epoch table and
// the checkpoint list. Values are written with textContent only.
"use strict";
(function () {
  const job = document.getElementById("job");
  if (!job) return;
  const id = job.dataset.jobId;
  const loss = [], accuracy = [];
  let seen = 0, pending = false;
  const live = document.getElementById("live");

  function redraw() {
    pending = false;
    drawLineChart(document.getElementById("loss-chart"), [{ points: loss }],
      { xLabel: "global step", yLabel: "loss (cross-entropy)", empty: "waiting for steps" });
    drawLineChart(document.getElementById("accuracy-chart"), [{ points: accuracy, dots: true }],
      { xLabel: "epoch", yLabel: "validation accuracy (%)", yMin: 0, yMax: 100, integerX: true,
        empty: "waiting for an epoch" });
  }
  function later() { if (!pending) { pending = true; requestAnimationFrame(redraw); } }

  function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

  function onEvent(e) {
    if (seen === 0) {  // the stream replays every event: it replaces what the page showed
      document.querySelector("#epochs tbody").replaceChildren();
      document.getElementById("checkpoints").replaceChildren();
    }
    seen += 1;
    if (e.kind === "progress") {
      loss.push([e.global_step, e.loss]);
      document.getElementById("progress").textContent = "step " + e.global_step +
        (e.total_steps ? " of " + e.total_steps : "") + ", epoch " + e.epoch +
        ", " + Math.round(e.samples_per_second) + " samples/s";
    } else if (e.kind === "epoch") {
      accuracy.push([e.epoch, e.val_accuracy * 100]);
      const row = document.createElement("tr");
      [e.epoch, e.train_loss.toPrecision(4), e.val_loss.toPrecision(4),
       (e.val_accuracy * 100).toFixed(1) + " %", Math.round(e.samples_per_second)].forEach((t) => cell(row, t));
      document.querySelector("#epochs tbody").appendChild(row);
    } else if (e.kind === "checkpoint") {
      const li = document.createElement("li");
      li.textContent = "step " + e.global_step + " at " + new Date(e.checkpoint_time_s * 1000).toISOString();
      document.getElementById("checkpoints").appendChild(li);
    } else if (e.kind === "state") {
      const s = document.getElementById("state");
      s.textContent = e.state;
      s.className = "state state-" + e.state.toLowerCase();
      if (e.message) live.textContent = e.message;
    } else if (e.kind === "model_version") {
      const [name, number] = e.model_version.split(":");
      const link = document.createElement("a");
      link.href = "/models/" + encodeURIComponent(name) + "#v" + encodeURIComponent(number);
      link.textContent = e.model_version;
      document.getElementById("result").replaceChildren(link);
    }
    later();
  }

  redraw();
  const source = new EventSource("/training/" + encodeURIComponent(id) + "/events");
  source.addEventListener("training", (m) => onEvent(JSON.parse(m.data)));
  source.addEventListener("end", () => {
    source.close();
    live.textContent = "The job has ended.";
    const cancel = document.querySelector('form[action$="/cancel"]');
    if (cancel) cancel.remove();  // nothing left to cancel
  });
  source.addEventListener("error", (m) => {
    if (m.data) { source.close(); const e = JSON.parse(m.data); live.textContent = e.code + ": " + e.message; }
  });
})();
