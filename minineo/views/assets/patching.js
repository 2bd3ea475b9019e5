// minineo patching view: a layers x (positions or heads) heatmap with hover values.
"use strict";
const V = floats(DATA.values), R = DATA.rows.length, C = DATA.columns.length;
let spread = 1e-9;
V.forEach(v => spread = Math.max(spread, Math.abs(v - DATA.centre)));
document.getElementById("metric").textContent = `Each cell: ${DATA.metric}. Rows: layers; columns: ` +
  ({pos: "positions", head: "heads", head_pos: "(position, head)"}[DATA.per]) + ". Hover a cell for its value.";
document.getElementById("scale").textContent = `colour: red below ${DATA.centre}, blue above, full at ` +
  `\u00b1${spread.toFixed(3)} from ${DATA.centre}`;
const table = document.getElementById("heatmap");
const head = table.insertRow();
head.appendChild(el("th", {}, ""));
const size = Math.max(12, Math.min(44, Math.floor(1180 / C)));   // square cells that fit ~1200 px
DATA.columns.forEach(c => { const th = el("th", {class: "col"}, c);
  if (DATA.per !== "head") { th.style.writingMode = "vertical-rl"; th.style.padding = "0"; th.style.width = size + "px"; }
  th.style.fontFamily = "monospace"; th.style.fontSize = "11px"; head.appendChild(th); });
for (let r = 0; r < R; r++) {
  const row = table.insertRow();
  row.appendChild(el("th", {}, DATA.rows[r]));
  for (let c = 0; c < C; c++) {
    const v = V[r * C + c];
    const td = el("td", {class: "hm", "data-row": r, "data-col": c});
    td.style.width = size + "px"; td.style.minWidth = size + "px"; td.style.height = size + "px"; td.style.background = div((v - DATA.centre) / spread);
    td.addEventListener("mouseenter", e => {
      showTip(`<b>${esc(DATA.rows[r])}, ${esc(DATA.columns[c])}</b>: ${fmt3(v)}`, e);
      tooltip.dataset.row = r; tooltip.dataset.col = c; tooltip.dataset.value = fmt3(v);
    });
    td.addEventListener("mouseleave", hideTip);
    row.appendChild(td);
  }
}
document.body.dataset.ready = "1";
