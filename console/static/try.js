// Try a model: draw on the pad (or pick an .npy file), post it as an .npy with the CSRF
// token in a header, and show the outputs or the Integrated-Gradients heat map.
"use strict";
(function () {
  const root = document.getElementById("try");
  if (!root) return;
  const H = +root.dataset.height, W = +root.dataset.width;
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const errorBox = document.getElementById("try-error");
  const pad = document.getElementById("pad");

  // An .npy (format 1.0) of float32 values, little-endian, C order.
  function npy(values, shape) {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape.join(", ") + (shape.length === 1 ? ",)" : ")") + ", }";
    const pad16 = 64 - ((10 + header.length + 1) % 64);
    header += " ".repeat(pad16 % 64) + "\n";
    const buf = new Uint8Array(10 + header.length + values.length * 4);
    buf.set([0x93, 78, 85, 77, 80, 89, 1, 0, header.length & 255, header.length >> 8]);
    for (let i = 0; i < header.length; i++) buf[10 + i] = header.charCodeAt(i);
    new Float32Array(buf.buffer, 10 + header.length).set(values);
    return buf;
  }

  // The pad downsampled to the model's H x W, ink in [0, 1].
  function padValues() {
    const small = document.createElement("canvas");
    small.width = W; small.height = H;
    const ctx = small.getContext("2d");
    ctx.drawImage(pad, 0, 0, W, H);
    const px = ctx.getImageData(0, 0, W, H).data, out = new Float32Array(W * H);
    for (let i = 0; i < W * H; i++) out[i] = px[4 * i] / 255;
    return out;
  }

  async function send(action, body) {
    errorBox.textContent = "";
    const url = "/try/" + encodeURIComponent(root.dataset.model) + "/" + action +
      "?version=" + encodeURIComponent(root.dataset.version);
    const r = await fetch(url, { method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "Content-Type": "application/octet-stream" } });
    const text = await r.text();
    let doc;
    try { doc = JSON.parse(text); } catch (_) { doc = { code: r.status, message: text }; }
    if (!r.ok) { errorBox.textContent = doc.code + ": " + doc.message; return null; }
    return doc;
  }

  function showOutputs(doc) {
    document.getElementById("prediction").textContent =
      doc.predicted === null ? "" : "Predicted class: " + doc.predicted;
    drawBarChart(document.getElementById("probabilities"), doc.probabilities,
      { xLabel: "class", yLabel: "probability", yMax: 1 });
    document.getElementById("outputs").textContent = doc.outputs.map((o) =>
      o.name + " " + JSON.stringify(o.shape) + ": " + o.values.map((v) => +v.toFixed(4)).join(", ")).join("\n");
  }

  function showHeatmap(doc) {
    const canvas = document.getElementById("heatmap"), ctx = canvas.getContext("2d");
    const a = doc.attributions, x = doc.input, rows = a.length, cols = a[0].length;
    const peak = Math.max(1e-12, ...a.flat().map(Math.abs));
    const cw = canvas.width / cols, ch = canvas.height / rows;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      const g = Math.round(255 * Math.min(1, Math.max(0, x[i][j])));
      ctx.fillStyle = "rgb(" + g + "," + g + "," + g + ")";
      ctx.fillRect(j * cw, i * ch, cw + 1, ch + 1);
      const v = a[i][j] / peak;
      ctx.fillStyle = v >= 0 ? "rgba(224,68,58," + v.toFixed(3) + ")" : "rgba(58,120,224," + (-v).toFixed(3) + ")";
      ctx.fillRect(j * cw, i * ch, cw + 1, ch + 1);
    }
    document.getElementById("explain-note").textContent = "class " + doc.target + ", f(x) = " +
      doc.target_output.toFixed(3) + (doc.convergence_delta === null ? "" : ", convergence delta " + doc.convergence_delta.toExponential(2));
  }

  async function run(action, body) {
    const doc = await send(action, body);
    if (doc) (action === "explain" ? showHeatmap : showOutputs)(doc);
  }

  async function fileBody() {
    const f = document.getElementById("npy").files[0];
    if (!f) { errorBox.textContent = "Choose an .npy file first."; return null; }
    return new Uint8Array(await f.arrayBuffer());
  }
  document.getElementById("predict-file").addEventListener("click", async () => { const b = await fileBody(); if (b) run("infer", b); });
  document.getElementById("explain-file").addEventListener("click", async () => { const b = await fileBody(); if (b) run("explain", b); });

  if (!pad) return;
  const ctx = pad.getContext("2d");
  function clear() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); }
  clear();
  let drawing = false;
  function at(e) { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; }
  pad.addEventListener("pointerdown", (e) => { drawing = true; pad.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.moveTo(...at(e)); });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = pad.width / 12; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.lineTo(...at(e)); ctx.stroke();
  });
  pad.addEventListener("pointerup", () => { drawing = false; });
  document.getElementById("clear").addEventListener("click", clear);
  const shape = [H, W];
  document.getElementById("predict").addEventListener("click", () => run("infer", npy(padValues(), shape)));
  document.getElementById("explain").addEventListener("click", () => run("explain", npy(padValues(), shape)));
})();
