// minineo circuit view: a layered graph of an EAP-IG file, a slider for the edges kept, click a node for its edges.
"use strict";
const L = DATA.n_layers, H = DATA.n_heads, NODES = DATA.nodes;
const SRC = uint16s(DATA.senders), DST = uint16s(DATA.receivers), PORT = uint16s(DATA.ports);
const SCORE = floats(DATA.scores);                        // sorted by |score|, largest first
const E = SCORE.length, MAXABS = Math.max(1e-12, Math.abs(SCORE[0] || 0));
const COL = Math.max(64, Math.min(110, Math.floor(900 / (H + 1)))), ROW = 92, NW = Math.min(54, COL - 8), NH = 22;
const W = COL * (H + 1) + 40, HEIGHT = ROW * (L + 1) + 60;
const svg = document.getElementById("graph");
svg.setAttribute("width", W); svg.setAttribute("height", HEIGHT); svg.setAttribute("viewBox", `0 0 ${W} ${HEIGHT}`);

// rows from the bottom, as `minineo discover --plot` draws them: input, then per layer its heads and above them its
// MLP, logits on top; edges run upwards, into a head's q / k / v cell at its foot
function rowY(layer) { return HEIGHT - 24 - ROW * (layer + 1); }
const pos = NODES.map(name => {                          // centre of each node
  if (name === "input") return {x: W / 2, y: HEIGHT - 24, w: 120};
  if (name === "logits") return {x: W / 2, y: 30, w: 120};
  let m = /^a(\d+)\.h(\d+)$/.exec(name);
  if (m) return {x: 20 + COL * (+m[2] + 0.5), y: rowY(+m[1]) + 18, w: NW};
  m = /^m(\d+)$/.exec(name);
  return {x: 20 + COL * (H + 0.5), y: rowY(+m[1]) - 18, w: NW};
});
function edgeName(e) {
  const port = PORT[e] < 3 ? `<${"qkv"[PORT[e]]}>` : "";
  return `${NODES[SRC[e]]}->${NODES[DST[e]]}${port}`;
}
function pathOf(e) {
  const s = pos[SRC[e]], r = pos[DST[e]];
  const x1 = s.x, y1 = s.y - NH / 2;                      // from the sender's top ...
  const x2 = r.x + (PORT[e] < 3 ? (PORT[e] - 1) * (r.w / 3) : 0), y2 = r.y + NH / 2;  // ... to the receiver's foot
  const dy = Math.max(20, (y1 - y2) / 2);
  return `M${x1.toFixed(1)},${y1.toFixed(1)} C${x1.toFixed(1)},${(y1 - dy).toFixed(1)} ${x2.toFixed(1)},${(y2 + dy).toFixed(1)} ${x2.toFixed(1)},${y2.toFixed(1)}`;
}

// static layers: row labels and nodes; edges go in their own group under the nodes
let html = `<g id="labels">`;
for (let l = 0; l < L; l++) html += `<text x="2" y="${rowY(l) + 4}" fill="#888">L${l}</text>`;
html += `</g><g id="edges"></g><g id="nodes">`;
NODES.forEach((name, i) => {
  const p = pos[i], head = name.startsWith("a");
  const fill = head ? "#eef3fb" : name.startsWith("m") ? "#f4f0fa" : "#f3f3f3";
  html += `<g class="node" data-node="${name}" data-index="${i}"><rect x="${p.x - p.w / 2}" y="${p.y - NH / 2}" ` +
    `width="${p.w}" height="${NH}" rx="4" fill="${fill}" stroke="#777"/>` +
    `<text x="${p.x}" y="${p.y + 4}" text-anchor="middle">${name}</text>`;
  if (head) for (let k = 0; k < 3; k++)
    html += `<text x="${p.x + (k - 1) * p.w / 3}" y="${p.y + NH / 2 + 10}" text-anchor="middle" font-size="9" fill="#555">${"qkv"[k]}</text>`;
  html += `</g>`;
});
svg.innerHTML = html + `</g>`;
const edgeGroup = svg.querySelector("#edges");

const fileButton = document.getElementById("file-circuit");
const slider = document.getElementById("keep"), number = document.getElementById("keep-number");
slider.max = E; number.max = E;
const FILE = DATA.in_graph;                               // the file's circuit (in_graph), largest |score| first
let mode = FILE.length > 0 ? "file" : "top", kept = 0, focus = null;

function width(e) { return (0.6 + 4.4 * Math.abs(SCORE[e]) / MAXABS).toFixed(2); }
// blue for a score < 0, red for a score > 0, as `minineo discover --plot` draws them (the note under the graph says
// what each means for the file's method and unit: with a logit difference blue is needed, with ACDC's KL red)
function colour(e) { return SCORE[e] < 0 ? "#2166ac" : "#b2182b"; }
// a number at `digits` decimals that never reads "-0.000": a value that rounds to zero prints as 0.000
function fixed(v, digits) { const text = v.toFixed(digits); return +text === 0 ? (0).toFixed(digits) : text; }
// an axis bound as it is, to 2 significant digits below 1 (-0.0457: "-0.046", not "-0.0") and 2 decimals above,
// trailing zeros dropped (1: "1", 1.0457: "1.05")
function bound(v) { return v === 0 ? "0" : String(+(Math.abs(v) < 1 ? v.toPrecision(2) : v.toFixed(2))); }
// the edges shown: the file's own circuit, exactly its in_graph edges; or the top N by |score| (the slider)
function shown() {
  if (mode === "file") return FILE;
  const list = new Array(kept);
  for (let e = 0; e < kept; e++) list[e] = e;
  return list;
}
const filePrefix = FILE.every((e, i) => e === i);        // is the file's circuit a top-N by |score|?

function drawEdges() {
  const list = shown(), n = list.length, drawn = Math.min(n, DATA.max_drawn);
  let out = "";
  for (let i = drawn - 1; i >= 0; i--) {                // smallest first, so the largest lie on top
    const e = list[i];
    const touches = focus === null || SRC[e] === focus || DST[e] === focus;
    const opacity = focus === null ? 0.35 + 0.6 * Math.abs(SCORE[e]) / MAXABS : (touches ? 0.95 : 0.06);
    out += `<path class="edge" data-edge="${e}" data-name="${esc(edgeName(e))}" d="${pathOf(e)}" fill="none" ` +
           `stroke="${colour(e)}" stroke-width="${width(e)}" stroke-opacity="${opacity.toFixed(2)}"/>`;
  }
  edgeGroup.innerHTML = out;
  svg.dataset.drawn = drawn; svg.dataset.kept = n; svg.dataset.mode = mode;
  const used = new Set();
  for (const e of list) { used.add(SRC[e]); used.add(DST[e]); }
  svg.querySelectorAll(".node").forEach(g => {
    const i = +g.dataset.index;
    g.style.opacity = n === 0 || used.has(i) ? 1 : 0.35;
    g.querySelector("rect").setAttribute("stroke-width", i === focus ? 3 : 1);
  });
  const full = DATA.n_edges_full;
  let status = mode === "file"
    ? `showing the file's circuit: its ${n.toLocaleString("en")} in_graph edges` +
      (filePrefix ? " (the top " + n + " by |score|)" : " (not a top-N by |score|; the slider shows top-N circuits)")
    : `kept the top ${n.toLocaleString("en")} of ${E.toLocaleString("en")} edges by |score|` +
      (E !== full ? ` (a full ${L} x ${H} graph has ${full.toLocaleString("en")})` : "");
  status += `; drawn: ${drawn.toLocaleString("en")}`;
  if (n > DATA.max_drawn) status += ` — only the ${DATA.max_drawn.toLocaleString("en")} largest |score| are drawn, ` +
    `the other ${(n - drawn).toLocaleString("en")} kept edges are listed when you click a node`;
  if (n > 0) status += `; smallest kept |score| ${Math.abs(SCORE[list[n - 1]]).toPrecision(3)}`;
  document.getElementById("status").textContent = status;
  document.getElementById("faith").textContent = faithText(n);
  drawCurve(n);
  fileButton.disabled = mode === "file";
  if (focus !== null) listEdges(focus);
}
function faithText(kept) {
  const f = DATA.faithfulness;
  if (!f) return "faithfulness: the file has no curve (optional key \"faithfulness\")";
  if (mode === "file" && !filePrefix)
    return `faithfulness curve: of top-k circuits by ${f.ranking} score; the file's circuit is not one (move the slider)`;
  let best = -1;
  for (let i = 0; i < f.n_edges.length; i++) if (f.n_edges[i] <= kept) best = i;
  const exact = best >= 0 && f.n_edges[best] === kept;
  if (best < 0) return `faithfulness: not measured at ${kept} edges or fewer (smallest measured size: ${f.n_edges[0]})`;
  return `faithfulness ${fixed(f.faithfulness[best], 3)} at ${f.n_edges[best]} edges` +
    (exact ? "" : ` (the largest measured size up to ${kept})`) + ` (edges ranked by ${f.ranking} score)`;
}
function drawCurve(kept) {                        // the file's faithfulness curve, the current size marked
  const f = DATA.faithfulness, box = document.getElementById("curve");
  if (!f) { box.hidden = true; return; }
  const w = 260, h = 90, x0 = 40, y0 = 8, pw = w - x0 - 8, ph = h - y0 - 20;
  const xmax = Math.max(E, ...f.n_edges), lo = Math.min(0, ...f.faithfulness), hi = Math.max(1, ...f.faithfulness);
  const X = k => x0 + pw * Math.log10(k + 1) / Math.log10(xmax + 1), Y = v => y0 + ph * (1 - (v - lo) / (hi - lo));
  let out = `<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#ccc"/>` +
    `<text class="bound" x="${x0 - 3}" y="${Y(hi) + 8}" font-size="9" text-anchor="end">${bound(hi)}</text>` +
    `<text class="bound" x="${x0 - 3}" y="${Y(lo)}" font-size="9" text-anchor="end">${bound(lo)}</text>` +
    `<text x="${x0}" y="${h - 4}" font-size="9">0</text><text x="${x0 + pw}" y="${h - 4}" font-size="9" text-anchor="end">${xmax} edges (axis: log of 1 + edges)</text>` +
    `<polyline fill="none" stroke="#333" points="${f.n_edges.map((k, i) => `${X(k).toFixed(1)},${Y(f.faithfulness[i]).toFixed(1)}`).join(" ")}"/>` +
    `<line x1="${X(kept)}" x2="${X(kept)}" y1="${y0}" y2="${y0 + ph}" stroke="#d07000"/>`;
  let best = -1;
  for (let i = 0; i < f.n_edges.length; i++) if (f.n_edges[i] <= kept) best = i;
  if (best >= 0) out += `<circle cx="${X(f.n_edges[best])}" cy="${Y(f.faithfulness[best])}" r="3.5" fill="#d07000"/>`;
  box.innerHTML = out;
}
function listEdges(i) {
  const rows = shown().filter(e => SRC[e] === i || DST[e] === i);
  document.getElementById("list-title").textContent = `${NODES[i]}: ${rows.length} kept edge${rows.length === 1 ? "" : "s"}`;
  let out = "<table>";
  for (const e of rows.slice(0, 1000))
    out += `<tr class="edge-row" data-edge-name="${esc(edgeName(e))}" data-score="${SCORE[e]}"><td>${esc(edgeName(e))}</td>` +
           `<td style="color:${colour(e)}">${fmt(SCORE[e])}</td></tr>`;
  if (rows.length > 1000) out += `<tr><td>... and ${rows.length - 1000} more</td></tr>`;
  document.getElementById("edge-list").innerHTML = out + "</table>";
}
function setKept(n) {                                     // the slider's choice: the top n by |score|
  mode = "top";
  kept = Math.max(0, Math.min(E, n | 0));
  slider.value = kept; number.value = kept;
  drawEdges();
}
function showFile() {                                     // the file's own circuit, exactly its in_graph edges
  mode = "file";
  slider.value = FILE.length; number.value = FILE.length;
  drawEdges();
}
slider.addEventListener("input", () => setKept(+slider.value));
number.addEventListener("change", () => setKept(+number.value));
svg.addEventListener("click", ev => {
  const g = ev.target.closest(".node");
  focus = g ? (+g.dataset.index === focus ? null : +g.dataset.index) : null;
  if (focus === null) { document.getElementById("list-title").textContent = "click a node";
    document.getElementById("edge-list").innerHTML = ""; }
  drawEdges();
});
svg.addEventListener("mousemove", ev => {
  const p = ev.target.closest(".edge");
  if (!p) { hideTip(); return; }
  const e = +p.dataset.edge;
  showTip(`${esc(edgeName(e))}: ${fmt(SCORE[e])}`, ev);
});
if (FILE.length > 0) {
  fileButton.hidden = false;
  fileButton.textContent = `the file's circuit: ${FILE.length} edges` + (filePrefix ? "" : " (its in_graph edges)");
  fileButton.addEventListener("click", showFile);
}
document.getElementById("source").textContent = [DATA.source ? `file: ${DATA.source}` : "",
  DATA.data_note ? `scores computed on: ${DATA.data_note}` : ""].filter(x => x).join("; ");
if (FILE.length > 0) showFile(); else setKept(Math.min(E, 50));
document.body.dataset.ready = "1";
