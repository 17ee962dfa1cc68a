/* Small SVG charts for the dashboard: time-series lines and labelled bars, no library.
 *
 * Labels go in through textContent like everything else; each chart records how many points it
 * drew (`data-points`) so tests and people can tell an empty chart from a flat one.
 */
(function (global) {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";
  const PAD = { left: 44, right: 8, top: 10, bottom: 22 };
  let WIDTH = 600;
  let HEIGHT = 180;

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function frame(svg, yMax, format) {
    // Drawn in the element's own pixels, so text keeps its size whatever the card's width.
    WIDTH = Math.max(200, svg.clientWidth || 600);
    HEIGHT = Math.max(120, svg.clientHeight || 180);
    svg.setAttribute("viewBox", "0 0 " + WIDTH + " " + HEIGHT);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + (1 - f) * (HEIGHT - PAD.top - PAD.bottom);
      parts.push(svgEl("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: "axis" }));
      parts.push(svgEl("text", { x: PAD.left - 4, y: y + 4, "text-anchor": "end" }, format(yMax * f)));
    }
    return parts;
  }

  /** series: [{name, points: [[x, y or null], ...]}] with x in seconds; draws lines with gaps at nulls. */
  function lineChart(svg, series, format) {
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
    const yMax = niceMax(Math.max(0, ...ys));
    const xMin = Math.min(...xs);
    const xMax = Math.max(...xs);
    const sx = (x) => PAD.left + ((x - xMin) / Math.max(1e-9, xMax - xMin)) * (WIDTH - PAD.left - PAD.right);
    const sy = (y) => PAD.top + (1 - y / yMax) * (HEIGHT - PAD.top - PAD.bottom);
    const parts = frame(svg, yMax, format);
    let drawn = 0;
    const dots = [];
    series.forEach((s, i) => {
      let d = "";
      let pen = "M";
      for (const [x, y] of s.points) {
        if (y === null || y === undefined) {
          pen = "M";
          continue;
        }
        d += pen + sx(x).toFixed(1) + " " + sy(y).toFixed(1) + " ";
        pen = "L";
        drawn += 1;
        // A dot per point: a bucket between two empty ones is a point with no line to draw.
        dots.push(svgEl("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5, class: "dot series-" + i }));
      }
      parts.push(svgEl("path", { d: d.trim() || "M0 0", class: "series-" + i }));
    });
    parts.push(...dots);
    if (xs.length) {
      const time = (x) => new Date(x * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      parts.push(svgEl("text", { x: PAD.left, y: HEIGHT - 6 }, time(xMin)));
      parts.push(svgEl("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" }, time(xMax)));
    }
    svg.replaceChildren(...parts);
    svg.dataset.points = String(drawn);
  }

  /** bars: [{label, value}] drawn left to right with their labels under them. */
  function barChart(svg, bars, format) {
    const yMax = niceMax(Math.max(0, ...bars.map((b) => b.value)));
    const parts = frame(svg, yMax, format);
    const inner = WIDTH - PAD.left - PAD.right;
    const slot = inner / Math.max(1, bars.length);
    bars.forEach((bar, i) => {
      const h = (bar.value / yMax) * (HEIGHT - PAD.top - PAD.bottom);
      const width = Math.min(slot * 0.7, 64);
      const x = PAD.left + i * slot + (slot - width) / 2;
      const rect = svgEl("rect", { x, y: HEIGHT - PAD.bottom - h, width, height: Math.max(0, h), class: "bar" });
      rect.appendChild(svgEl("title", {}, bar.label + ": " + format(bar.value)));
      parts.push(rect);
      parts.push(svgEl("text", { x: x + width / 2, y: HEIGHT - 6, "text-anchor": "middle" }, bar.label.slice(0, 18)));
    });
    svg.replaceChildren(...parts);
    svg.dataset.points = String(bars.length);
  }

  function legend(list, names) {
    list.replaceChildren(
      ...names.map((name, i) => {
        const item = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = "swatch series-" + i;
        item.append(swatch, document.createTextNode(name));
        return item;
      })
    );
  }

  global.TYCharts = { lineChart, barChart, legend };
})(window);
