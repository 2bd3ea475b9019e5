// minineo views: helpers shared by every page (decoding packed tensors, colours, the tooltip).
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);

function bytes(text) {                       // base64 -> Uint8Array
  const raw = atob(text), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
function floats(text) { return new Float32Array(bytes(text).buffer); }   // little-endian float32
function uint16s(text) { return new Uint16Array(bytes(text).buffer); }   // little-endian uint16
function dequantise(packed) {                // {low, high, data}: 16-bit levels over [low, high]
  const q = uint16s(packed.data), out = new Float32Array(q.length);
  const step = (packed.high - packed.low) / 65535;
  for (let i = 0; i < q.length; i++) out[i] = packed.low + q[i] * step;
  return out;
}
function fmt3(x) { const s = x.toFixed(3); return /^-0\.0+$/.test(s) ? s.slice(1) : s; }  // never "-0.000"
function fmt(x) { const s = fmt3(x); return (s[0] === "-" ? "" : "+") + s; }             // signed, 3 digits

// Colours: sequential white -> blue for probabilities, diverging red - white - blue for signed values.
function seq(t) {
  t = Math.max(0, Math.min(1, t));
  const r = Math.round(255 - 225 * t), g = Math.round(255 - 175 * t), b = Math.round(255 - 75 * t);
  return `rgb(${r},${g},${b})`;
}
function div(t) {                           // t in [-1, 1]
  t = Math.max(-1, Math.min(1, t));
  if (t >= 0) return `rgb(${Math.round(255 - 222 * t)},${Math.round(255 - 153 * t)},${Math.round(255 - 75 * t)})`;
  t = -t;
  return `rgb(${Math.round(255 - 40 * t)},${Math.round(255 - 215 * t)},${Math.round(255 - 200 * t)})`;
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function shown(token) { return token.replace(/ /g, "\u2423").replace(/\n/g, "\\n").replace(/\t/g, "\\t"); }

const tooltip = document.getElementById("tooltip");
function showTip(html, event) {
  tooltip.innerHTML = html;
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
  const y = Math.min(event.clientY + 14, window.innerHeight - tooltip.offsetHeight - 8);
  tooltip.style.left = x + "px";
  tooltip.style.top = y + "px";
}
function hideTip() { tooltip.hidden = true; }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
