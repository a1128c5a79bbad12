// Two small inline-SVG charts. Every bar carries its number as text (and a <title> tooltip),
// so they read the same without colour and for screen readers (role="img" + <title>/<desc>).

const SVG = "http://www.w3.org/2000/svg";
const MAX_CATEGORIES = 15;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(width, height, title, description) {
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    class: "chart",
  });
  svg.append(el("title", {}, title), el("desc", {}, description));
  return svg;
}

/** A number short enough for an axis label. */
export function short(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4 || magnitude < 1e-3) return value.toExponential(2);
  return Number(value.toPrecision(3)).toString();
}

/**
 * Counts of `values` in `bins` equal-width bins between their min and max.
 * @returns {{lo: number, hi: number, counts: number[]}}
 */
export function binScores(values, bins) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const n = hi > lo ? bins : 1; // all equal: one bar, not a division by zero
  const counts = new Array(n).fill(0);
  for (const v of values) {
    const i = hi > lo ? Math.min(n - 1, Math.floor(((v - lo) / (hi - lo)) * n)) : 0;
    counts[i] += 1;
  }
  return { lo, hi, counts };
}

/** Histogram of the scores (null scores are left out and said so). */
export function histogram(scores) {
  const values = scores.filter((s) => typeof s === "number" && Number.isFinite(s));
  if (!values.length) {
    const p = document.createElement("p");
    p.textContent = "No scores to draw (the request asked for none).";
    return p;
  }
  const bins = Math.max(1, Math.min(12, Math.ceil(Math.sqrt(values.length))));
  const { lo, hi, counts } = binScores(values, bins);
  const width = 520;
  const height = 220;
  const left = 36;
  const bottom = 44;
  const top = 18;
  const plotW = width - left - 10;
  const plotH = height - top - bottom;
  const peak = Math.max(...counts);
  const barW = plotW / counts.length;
  const svg = chart(
    width,
    height,
    `Histogram of ${values.length} scores from ${short(lo)} to ${short(hi)}`,
    counts
      .map((c, i) => `${short(lo + (i * (hi - lo)) / counts.length)}: ${c}`)
      .join(", "),
  );
  svg.append(el("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, class: "axis" }));
  counts.forEach((count, i) => {
    const h = peak ? (count / peak) * plotH : 0;
    const x = left + i * barW;
    const from = lo + (i * (hi - lo)) / counts.length;
    const to = lo + ((i + 1) * (hi - lo)) / counts.length;
    const bar = el("rect", {
      x: x + 1,
      y: top + plotH - h,
      width: Math.max(1, barW - 2),
      height: h,
      class: "bar",
    });
    bar.append(el("title", {}, `${short(from)} to ${short(to)}: ${count} row(s)`));
    svg.append(bar);
    svg.append(
      el("text", { x: x + barW / 2, y: top + plotH - h - 4, class: "count", "text-anchor": "middle" }, String(count)),
    );
  });
  // Edge labels at both ends and the middle: enough to read the range without crowding.
  const ticks = counts.length > 1 ? [0, Math.floor(counts.length / 2), counts.length] : [0, 1];
  for (const t of ticks) {
    const value = counts.length > 1 ? lo + (t * (hi - lo)) / counts.length : t ? hi : lo;
    const anchor = t === 0 ? "start" : t === counts.length || (counts.length === 1 && t) ? "end" : "middle";
    svg.append(el("text", { x: left + t * barW, y: top + plotH + 16, class: "tick", "text-anchor": anchor }, short(value)));
  }
  svg.append(el("text", { x: left + plotW / 2, y: height - 6, class: "label", "text-anchor": "middle" }, "score"));
  svg.append(
    el("text", { x: 12, y: top + plotH / 2, class: "label", "text-anchor": "middle", transform: `rotate(-90 12 ${top + plotH / 2})` }, "rows"),
  );
  return svg;
}

/**
 * Horizontal bars: selected rows per value of a field, most frequent first; values past the
 * first few are summed into one "other" bar.
 * @param {Map<string, number>} counts value (as text) -> rows
 * @param {string} field the field's name, for the title
 */
export function barChart(counts, field) {
  const entries = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (!entries.length) {
    const p = document.createElement("p");
    p.textContent = `No values of ${field} in the selection.`;
    return p;
  }
  let shown = entries;
  if (entries.length > MAX_CATEGORIES) {
    const rest = entries.slice(MAX_CATEGORIES - 1);
    shown = entries.slice(0, MAX_CATEGORIES - 1);
    shown.push([`other (${rest.length} values)`, rest.reduce((sum, [, c]) => sum + c, 0)]);
  }
  const total = entries.reduce((sum, [, c]) => sum + c, 0);
  const rowH = 22;
  const labelW = 150;
  const width = 520;
  const barMax = width - labelW - 90;
  const height = shown.length * rowH + 10;
  const peak = Math.max(...shown.map(([, c]) => c));
  const svg = chart(
    width,
    height,
    `Selected rows per ${field}`,
    shown.map(([value, c]) => `${value}: ${c}`).join(", "),
  );
  shown.forEach(([value, count], i) => {
    const y = 5 + i * rowH;
    const w = peak ? (count / peak) * barMax : 0;
    const label = value.length > 22 ? value.slice(0, 21) + "…" : value;
    svg.append(el("text", { x: labelW - 6, y: y + 15, class: "tick", "text-anchor": "end" }, label));
    const bar = el("rect", { x: labelW, y: y + 3, width: Math.max(1, w), height: rowH - 6, class: "bar" });
    bar.append(el("title", {}, `${value}: ${count} row(s)`));
    svg.append(bar);
    const share = ((100 * count) / total).toFixed(count === total ? 0 : 1);
    svg.append(el("text", { x: labelW + w + 6, y: y + 15, class: "count" }, `${count} (${share} %)`));
  });
  return svg;
}
