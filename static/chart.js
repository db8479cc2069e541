// The compact chart: cumulative bytes against layer, one bar per layer of the layer table;
// layers that have arrived are solid, the shown one is marked, the rest are outlines.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 320;
const HEIGHT = 150;
const MARGIN = { left: 46, right: 8, top: 12, bottom: 30 };

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function kilobytes(bytes) {
  return bytes >= 10_000 ? `${Math.round(bytes / 1000)} kB` : `${(bytes / 1000).toFixed(1)} kB`;
}

/** Redraw `svg` for `info` with `received` (a Set of layer indices) and the `shown` layer. */
export function drawChart(svg, info, received, shown) {
  svg.replaceChildren();
  if (!info) return;
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const slot = plotWidth / info.layers.length;
  const y = (bytes) => MARGIN.top + plotHeight * (1 - bytes / info.bytes);

  svg.append(
    element("line", { class: "axis", x1: MARGIN.left, y1: MARGIN.top, x2: MARGIN.left, y2: MARGIN.top + plotHeight }),
    element("line", { class: "axis", x1: MARGIN.left, y1: MARGIN.top + plotHeight, x2: WIDTH - MARGIN.right, y2: MARGIN.top + plotHeight }),
    element("text", { class: "tick", x: MARGIN.left - 4, y: y(info.bytes) + 4, "text-anchor": "end" }, kilobytes(info.bytes)),
    element("text", { class: "tick", x: MARGIN.left - 4, y: y(0) + 4, "text-anchor": "end" }, "0"),
    element("text", { class: "axis-title", x: MARGIN.left + plotWidth / 2, y: HEIGHT - 2, "text-anchor": "middle" }, "layer"),
  );
  for (const [position, layer] of info.layers.entries()) {
    const top = y(layer.cumulative_bytes);
    const x = MARGIN.left + position * slot + slot * 0.15;
    const state = layer.index === shown ? "shown" : received.has(layer.index) ? "received" : "pending";
    const bar = element("rect", { class: `bar ${state}`, x, y: top, width: slot * 0.7, height: MARGIN.top + plotHeight - top });
    bar.append(element("title", {}, `layer ${layer.index}: ${layer.cumulative_bytes} bytes in all, ${layer.bpp.toFixed(3)} bpp`));
    svg.append(
      bar,
      element("text", { class: "tick", x: x + slot * 0.35, y: MARGIN.top + plotHeight + 13, "text-anchor": "middle" }, layer.index),
    );
  }
}
