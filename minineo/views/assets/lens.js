// minineo lens view: positions x layers, coloured by the next token's rank or probability; hover: top tokens.
"use strict";
const N = DATA.tokens.length, K = DATA.top_k;
const LENSES = {};
for (const key in DATA.lenses) {
  const s = DATA.lenses[key];
  LENSES[key] = {labels: s.labels, top_ids: s.top_ids, top_probs: floats(s.top_probs), next_rank: s.next_rank,
                 next_prob: floats(s.next_prob)};
}
let current = Object.keys(LENSES)[0], colourBy = "rank";
const grid = document.getElementById("lens-grid");
function word(id) { return shown(DATA.vocab[String(id)]); }

function build() {
  const lens = LENSES[current], nL = lens.labels.length;
  document.getElementById("legend").textContent = colourBy === "rank" ?
    `colour: the next token's rank on a log scale, 1 − log10(rank + 1) / log10(d_vocab = ${DATA.d_vocab}): ` +
    "darkest blue = rank 0 (the lens's top token is the true next token), white = the last rank; grey: no next token" :
    "colour: the next token's probability, white 0 to dark blue 1; grey: no next token";
  grid.innerHTML = "";
  const head = grid.insertRow();
  head.appendChild(el("th", {}, "pos"));
  head.appendChild(el("th", {}, "token"));
  head.appendChild(el("th", {}, "next"));
  lens.labels.forEach(l => head.appendChild(el("th", {}, l)));
  for (let p = 0; p < N; p++) {
    const row = grid.insertRow();
    row.appendChild(el("th", {class: "pos"}, String(p)));
    row.appendChild(el("th", {class: "pos"}, shown(DATA.tokens[p])));
    row.appendChild(el("th", {class: "pos"}, p < N - 1 ? shown(DATA.tokens[p + 1]) : ""));
    for (let l = 0; l < nL; l++) {
      const top = lens.top_ids[(l * N + p) * K];
      const c = el("td", {class: "cell", "data-layer": l, "data-pos": p}, word(top));
      if (p < N - 1) {
        const rank = lens.next_rank[l * (N - 1) + p], prob = lens.next_prob[l * (N - 1) + p];
        const t = colourBy === "rank" ? 1 - Math.log10(rank + 1) / Math.log10(DATA.d_vocab) : prob;  // rank 0 -> 1
        c.style.background = seq(t);
        if (t > 0.6) c.style.color = "#fff";
      } else c.style.background = "#f0f0f0";
      c.addEventListener("mouseenter", e => tip(c, l, p, e));
      c.addEventListener("mouseleave", hideTip);
      row.insertCell().replaceWith(c);
    }
  }
}
function tip(cell, l, p, e) {
  const lens = LENSES[current];
  let rows = "";
  for (let k = 0; k < K; k++) {
    const id = lens.top_ids[(l * N + p) * K + k], prob = lens.top_probs[(l * N + p) * K + k];
    rows += `<tr class="top" data-token-id="${id}" data-prob="${fmt3(prob)}"><td>${esc(word(id))}</td><td>${fmt3(prob)}</td></tr>`;
  }
  let next = "";
  if (p < N - 1) {
    const rank = lens.next_rank[l * (N - 1) + p], prob = lens.next_prob[l * (N - 1) + p];
    next = `<div class="next" data-rank="${rank}" data-prob="${fmt3(prob)}">next token ${esc(shown(DATA.tokens[p + 1]))}: ` +
           `rank ${rank}, probability ${fmt3(prob)}</div>`;
  }
  showTip(`<b>${esc(current)}, ${esc(lens.labels[l])}, position ${p} ${esc(shown(DATA.tokens[p]))}</b>` +
          `<table>${rows}</table>${next}`, e);
  tooltip.dataset.layer = l; tooltip.dataset.pos = p;
}
const choice = document.getElementById("lens-choice");
if (Object.keys(LENSES).length > 1) {
  for (const key in LENSES) {
    const b = el("button", {id: "lens-" + key.replace(" ", "-"), class: key === current ? "active" : ""}, key);
    b.addEventListener("click", () => { current = key; choice.querySelectorAll("button").forEach(x =>
      x.classList.toggle("active", x === b)); build(); });
    choice.appendChild(b);
  }
}
for (const [id, by] of [["by-rank", "rank"], ["by-prob", "prob"]]) {
  document.getElementById(id).addEventListener("click", () => {
    colourBy = by;
    document.getElementById("by-rank").classList.toggle("active", by === "rank");
    document.getElementById("by-prob").classList.toggle("active", by === "prob");
    build();
  });
}
build();
document.body.dataset.ready = "1";
