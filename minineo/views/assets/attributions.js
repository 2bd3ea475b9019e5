// minineo attributions view: a sortable bar chart of direct logit attributions.
"use strict";
const VALUES = floats(DATA.values);
const items = DATA.labels.map((label, i) => ({label, value: VALUES[i], index: i}));
const scale = Math.max(1e-9, ...items.map(x => Math.abs(x.value)));
const bars = document.getElementById("bars");
const target = DATA.wrong === null ? `logit of ${shown(DATA.answer)}` :
  `logit difference ${shown(DATA.answer)} \u2212 ${shown(DATA.wrong)}`;
document.getElementById("target").textContent = `Each component's direct effect on the ${target} at position ` +
  `${DATA.position} (${shown(DATA.tokens[DATA.position])}), in logits: its write to the residual stream through ` +
  `ln_final (the cached scale) onto the unembedding direction. Blue: towards the answer; red: against it.`;
let total = 0; VALUES.forEach(v => total += v);
document.getElementById("sum").textContent = `sum of the ${items.length} components ${fmt(total)} + ln_final bias ` +
  `term ${fmt(DATA.bias_term)} = ${fmt(total + DATA.bias_term)}; the model's ${target}: ${fmt(DATA.logit)}`;

function draw(order) {
  bars.innerHTML = "";
  for (const item of order) {
    const row = el("div", {class: "bar-row", "data-label": item.label, "data-value": fmt3(item.value)});
    row.appendChild(el("div", {class: "bar-label"}, item.label));
    const track = el("div", {class: "bar-track"});
    const half = 260, w = Math.abs(item.value) / scale * half;
    const bar = el("div", {class: "bar"});
    bar.style.left = (item.value >= 0 ? half : half - w) + "px";
    bar.style.width = Math.max(1, w) + "px";
    bar.style.background = item.value >= 0 ? "#2166ac" : "#b2182b";
    const axis = el("div", {class: "axis"}); axis.style.left = half + "px";
    track.appendChild(bar); track.appendChild(axis);
    row.appendChild(track);
    row.appendChild(el("div", {class: "bar-value"}, fmt(item.value)));
    row.addEventListener("mouseenter", e => { showTip(`<b>${esc(item.label)}</b>: ${fmt(item.value)} logits`, e);
      tooltip.dataset.label = item.label; tooltip.dataset.value = fmt3(item.value); });
    row.addEventListener("mouseleave", hideTip);
    bars.appendChild(row);
  }
}
const sorts = {"sort-model": (a, b) => a.index - b.index, "sort-value": (a, b) => b.value - a.value,
               "sort-abs": (a, b) => Math.abs(b.value) - Math.abs(a.value)};
for (const id in sorts) {
  document.getElementById(id).addEventListener("click", () => {
    for (const other in sorts) document.getElementById(other).classList.toggle("active", other === id);
    draw([...items].sort(sorts[id]));
  });
}
draw(items);
document.body.dataset.ready = "1";
