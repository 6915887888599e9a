// Bar charts drawn as SVG: a fixed viewBox scaled by CSS, a text alternative for screen readers.
import { svg } from './dom.js';

/**
 * bars: [{label, value, cls}] drawn left to right. `labelEvery` thins the x labels of long
 * series; `description` is the accessible name.
 */
export function barChart(bars, { description, width = 480, height = 200, labelEvery = 1 } = {}) {
  const pad = { top: 12, right: 8, bottom: 24, left: 34 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  // An even top, so the middle grid line is a whole number too.
  const max = 2 * Math.ceil(Math.max(1, ...bars.map((bar) => bar.value)) / 2);
  const step = innerW / Math.max(1, bars.length);
  const barW = Math.max(2, step * 0.7);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': description });
  chart.append(svg('title', {}, description));
  for (const tick of [0, 0.5, 1]) {
    const y = pad.top + innerH * (1 - tick);
    chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: 'axis' }));
    chart.append(svg('text', { x: pad.left - 6, y: y + 4, 'text-anchor': 'end' }, max * tick));
  }
  bars.forEach((bar, index) => {
    const h = (bar.value / max) * innerH;
    const x = pad.left + index * step + (step - barW) / 2;
    const rect = svg('rect', { x, y: pad.top + innerH - h, width: barW, height: Math.max(h, 0), rx: 2, class: bar.cls || 'bar-series' });
    rect.append(svg('title', {}, `${bar.label}: ${bar.value}`));
    chart.append(rect);
    if (index % labelEvery === 0) {
      chart.append(svg('text', { x: x + barW / 2, y: height - 8, 'text-anchor': 'middle' }, bar.label));
    }
  });
  return chart;
}
