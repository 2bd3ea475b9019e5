// minineo attention view: head grid, enlarged pattern, tokens coloured by attention.
"use strict";
const N = DATA.tokens.length, L = DATA.n_layers, H = DATA.n_heads;
const TRI = N * (N + 1) / 2;
const values = dequantise(DATA.pattern);        // (layer, head, lower triangle), row-major over queries
let selected = [0, 0], mode = "from", hovered = null;

function value(l, h, i, j) {                     // pattern[l, h, query i, key j]; 0 above the diagonal
  return j > i ? 0 : values[(l * H + h) * TRI + i * (i + 1) / 2 + j];
}
function visible(l, i, j) {                      // can query i see key j in layer l (causal + window)?
  const w = DATA.windows[l];
  return j <= i && (w === null || j > i - w);
}
function label(l) { return DATA.windows[l] === null ? `L${l}` : `L${l} local, window ${DATA.windows[l]}`; }

function draw(canvas, l, h, cell) {
  canvas.width = N * cell; canvas.height = N * cell;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < N; i++) for (let j = 0; j <= i; j++) {
    ctx.fillStyle = visible(l, i, j) ? seq(Math.sqrt(value(l, h, i, j))) : "#e4e4e4";  // sqrt: small weights show
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }
  const w = DATA.windows[l];
  if (w !== null && w < N && cell >= 3) {       // the window's lower edge: keys j > i - w
    ctx.strokeStyle = "#d07000"; ctx.lineWidth = 1; ctx.beginPath();
    for (let i = w; i < N; i++) { ctx.moveTo((i - w + 1) * cell, i * cell); ctx.lineTo((i - w + 1) * cell, (i + 1) * cell);
      ctx.lineTo((i - w + 2) * cell, (i + 1) * cell); }
    ctx.stroke();
  }
}

const grid = document.getElementById("head-grid");
const thumbs = [];
const thumbSize = Math.max(32, Math.min(72, Math.floor(560 / H) - 4));
const head = grid.insertRow();
head.appendChild(el("th", {}, ""));
for (let h = 0; h < H; h++) head.appendChild(el("th", {}, `H${h}`));
for (let l = 0; l < L; l++) {
  const row = grid.insertRow();
  row.appendChild(el("th", {class: "layer-label", "data-layer": l}, label(l)));
  thumbs.push([]);
  for (let h = 0; h < H; h++) {
    const c = el("canvas", {class: "thumb", "data-layer": l, "data-head": h, title: `L${l}H${h}`});
    draw(c, l, h, 1);
    c.base = c.getContext("2d").getImageData(0, 0, N, N);   // restored when the hover ends
    c.style.width = thumbSize + "px"; c.style.height = thumbSize + "px";
    c.addEventListener("click", () => select(l, h));
    row.insertCell().appendChild(c);
    thumbs[l].push(c);
  }
}

const big = document.getElementById("big"), readout = document.getElementById("readout");
const CELL = Math.max(4, Math.min(16, Math.floor(560 / N)));
function select(l, h) {
  thumbs[selected[0]][selected[1]].classList.remove("selected");
  selected = [l, h];
  thumbs[l][h].classList.add("selected");
  document.getElementById("big-title").textContent = `L${l}H${h}` + (DATA.windows[l] === null ? "" :
    ` (local layer: each query sees its last ${DATA.windows[l]} keys, itself included; grey = outside the window)`);
  document.getElementById("window-note").textContent = DATA.windows[l] === null ? "" :
    `layer ${l} is local (window ${DATA.windows[l]}): struck-through tokens are outside the window`;
  draw(big, l, h, CELL);
  readout.textContent = ""; readout.dataset.value = "";
  big.dataset.layer = l; big.dataset.head = h; big.dataset.cell = CELL;
  if (hovered !== null) colourTokens(hovered);
}
big.addEventListener("mousemove", e => {
  const i = Math.floor(e.offsetY / CELL), j = Math.floor(e.offsetX / CELL);
  if (i < 0 || j < 0 || i >= N || j >= N) return;
  const [l, h] = selected;
  if (j > i) { readout.textContent = `query ${i} cannot see key ${j} (a later position)`; readout.dataset.value = ""; hideTip(); return; }
  const v = value(l, h, i, j);
  const text = `L${l}H${h} query ${i} ${shown(DATA.tokens[i])} \u2192 key ${j} ${shown(DATA.tokens[j])}: ${fmt3(v)}` +
    (visible(l, i, j) ? "" : " (outside the window)");
  readout.textContent = text;
  readout.dataset.query = i; readout.dataset.key = j; readout.dataset.value = fmt3(v);
  showTip(esc(text), e);
});
big.addEventListener("mouseleave", hideTip);

const strip = document.getElementById("tokens");
const spans = DATA.tokens.map((t, p) => {
  const s = el("span", {class: "tok", "data-pos": p}, shown(t));
  s.addEventListener("mouseenter", () => { hovered = p; colourTokens(p); focusThumbs(p); });
  strip.appendChild(s);
  return s;
});
function focusThumbs(p) {                       // every head: only the hovered token's row (from) or column (to)
  for (const row of thumbs) for (const c of row) {
    const ctx = c.getContext("2d");
    ctx.putImageData(c.base, 0, 0);
    if (p === null) continue;
    ctx.fillStyle = "rgba(255,255,255,0.65)";
    if (mode === "from") { ctx.fillRect(0, 0, N, p); ctx.fillRect(0, p + 1, N, N - p - 1); }
    else { ctx.fillRect(0, 0, p, N); ctx.fillRect(p + 1, 0, N - p - 1, N); }
  }
}
strip.addEventListener("mouseleave", () => { hovered = null; focusThumbs(null); spans.forEach(s => { s.style.background = "";
  s.classList.remove("current", "outside"); s.removeAttribute("data-value"); s.title = ""; }); });
function colourTokens(p) {
  const [l, h] = selected;
  spans.forEach((s, q) => {
    const [i, j] = mode === "from" ? [p, q] : [q, p];      // from: query p over keys q; to: queries q onto key p
    s.classList.toggle("current", q === p);
    if (j > i) { s.style.background = ""; s.classList.remove("outside"); s.removeAttribute("data-value"); s.title = ""; return; }
    const v = value(l, h, i, j);
    s.style.background = seq(Math.sqrt(v));
    s.classList.toggle("outside", !visible(l, i, j));
    s.dataset.value = fmt3(v);
    s.title = `L${l}H${h} query ${i} \u2192 key ${j}: ${fmt3(v)}` + (visible(l, i, j) ? "" : " (outside the window)");
  });
}
for (const [id, m] of [["mode-from", "from"], ["mode-to", "to"]]) {
  document.getElementById(id).addEventListener("click", () => {
    mode = m;
    document.getElementById("mode-from").classList.toggle("active", m === "from");
    document.getElementById("mode-to").classList.toggle("active", m === "to");
    if (hovered !== null) { colourTokens(hovered); focusThumbs(hovered); }
  });
}
select(0, 0);
document.body.dataset.ready = "1";
