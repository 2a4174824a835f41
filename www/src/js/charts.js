// Small SVG charts drawn with DOM calls only (no inline styles or scripts, so they live under the
// site's strict Content-Security-Policy): α per token, one line per expert; and weights as bars.
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** α of each expert per generated token. `steps`: [{alpha: number[], piece}], `names`: expert names,
 * `colours`: each expert's colour index (its place in the family, so colours do not move with the selection). */
export function alphaChart(svg, steps, names, { maxAlpha = 2, colours = names.map((_, i) => i) } = {}) {
  const w = 640, h = 220, left = 36, right = 12, top = 12, bottom = 28;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "alpha per token");
  const hi = Math.max(maxAlpha, ...steps.flatMap((s) => s.alpha));
  const x = (i) => left + (steps.length <= 1 ? 0 : (i * (w - left - right)) / (steps.length - 1));
  const y = (a) => top + (1 - a / hi) * (h - top - bottom);
  for (let g = 0; g <= hi + 1e-9; g += 0.5) {
    svg.append(el("line", { x1: left, x2: w - right, y1: y(g), y2: y(g), class: "grid" }));
    svg.append(el("text", { x: left - 6, y: y(g) + 4, class: "tick", "text-anchor": "end" }, g.toFixed(1)));
  }
  svg.append(el("text", { x: left, y: h - 6, class: "tick" }, "token →"));
  names.forEach((name, t) => {
    const pts = steps.map((s, i) => `${x(i).toFixed(1)},${y(s.alpha[t]).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: pts, class: `series e${colours[t] % 6}` }));
    steps.forEach((s, i) => {
      const c = el("circle", { cx: x(i), cy: y(s.alpha[t]), r: 3, class: `dot e${colours[t] % 6}` });
      c.append(el("title", {}, `${name}: α = ${s.alpha[t].toFixed(2)} at ${JSON.stringify(s.piece)}`));
      svg.append(c);
    });
    svg.append(el("text", { x: w - right, y: top + 12 + 14 * t, class: `legend e${colours[t] % 6}`, "text-anchor": "end" }, name));
  });
}

/** Horizontal bars: one per label, value in [0, 1]. */
export function barChart(svg, labels, values) {
  const w = 480, row = 28, left = 90, right = 56;
  const h = row * labels.length + 8;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "router weights");
  labels.forEach((label, i) => {
    const v = Math.max(0, Math.min(1, values[i]));
    const yy = 4 + i * row;
    svg.append(el("text", { x: left - 8, y: yy + 17, class: "tick", "text-anchor": "end" }, label));
    svg.append(el("rect", { x: left, y: yy + 4, width: w - left - right, height: row - 10, class: "track" }));
    svg.append(el("rect", { x: left, y: yy + 4, width: (w - left - right) * v, height: row - 10, class: `bar e${i % 6}` }));
    svg.append(el("text", { x: w - right + 6, y: yy + 17, class: "tick" }, v.toFixed(3)));
  });
}

/** Index of the expert that steered a step most (largest α), or -1 when no expert moved it (all α = 0). */
export function steeringExpert(alpha) {
  let best = -1, bestA = 0;
  alpha.forEach((a, t) => {
    if (a > bestA) { best = t; bestA = a; }
  });
  return best;
}

/** One span per generated token, coloured by the expert that steered it (`colours` as in alphaChart). */
export function tokenSpan(step, colours = step.alpha.map((_, i) => i)) {
  const span = document.createElement("span");
  const t = steeringExpert(step.alpha);
  span.className = t < 0 ? "tok large" : `tok e${colours[t] % 6}`;
  // A step that adds no text (the end-of-answer token, or the first bytes of a multi-byte character) is
  // shown as a small mark so that its α still has a token to belong to.
  span.textContent = step.delta === "" ? "⏎" : step.delta;
  if (step.delta === "") span.classList.add("end");
  span.title = `${JSON.stringify(step.piece)}: α = [${step.alpha.map((a) => a.toFixed(2)).join(", ")}]` + (step.loss == null ? "" : `, loss ${step.loss.toExponential(2)}`);
  return span;
}
