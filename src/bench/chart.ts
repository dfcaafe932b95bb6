import type { RunResult } from './load.ts';

const WIDTH = 860;
const HEIGHT = 360;
const PANEL_WIDTH = 380;
const MARGIN = 50;
const COLORS: Record<string, string> = { aspen: '#2b7a3d', etcd: '#3b5fc0' };

/** Two panels (write throughput and write p99 against clients), one line per system, as plain SVG. */
export function chartSvg(results: readonly RunResult[], title: string): string {
  const writes = results.filter((result) => result.operation === 'write');
  const systems = [...new Set(writes.map((result) => result.system))];
  const clients = [...new Set(writes.map((result) => result.clients))].sort((a, b) => a - b);
  const panels = [
    { label: 'writes/s', value: (result: RunResult) => result.opsPerSecond, x0: MARGIN },
    { label: 'write p99 (ms)', value: (result: RunResult) => result.p99Ms, x0: MARGIN * 2 + PANEL_WIDTH },
  ];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<text x="${WIDTH / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
  ];
  for (const panel of panels) {
    const top = 40;
    const bottom = HEIGHT - MARGIN;
    const max = Math.max(1, ...writes.map(panel.value)) * 1.1;
    const x = (index: number) =>
      panel.x0 + (clients.length <= 1 ? PANEL_WIDTH / 2 : (index * PANEL_WIDTH) / (clients.length - 1));
    const y = (value: number) => bottom - ((bottom - top) * value) / max;
    parts.push(
      `<line x1="${panel.x0}" y1="${bottom}" x2="${panel.x0 + PANEL_WIDTH}" y2="${bottom}" stroke="#888"/>`,
      `<line x1="${panel.x0}" y1="${top}" x2="${panel.x0}" y2="${bottom}" stroke="#888"/>`,
      `<text x="${panel.x0 + PANEL_WIDTH / 2}" y="${HEIGHT - 12}" text-anchor="middle">clients (${panel.label})</text>`,
      `<text x="${panel.x0 - 4}" y="${top + 4}" text-anchor="end">${Math.round(max)}</text>`,
    );
    clients.forEach((count, index) => {
      parts.push(`<text x="${x(index)}" y="${bottom + 16}" text-anchor="middle">${count}</text>`);
    });
    for (const system of systems) {
      const points = clients.flatMap((count, index) => {
        const result = writes.find((item) => item.system === system && item.clients === count);
        return result === undefined ? [] : [`${x(index).toFixed(1)},${y(panel.value(result)).toFixed(1)}`];
      });
      parts.push(
        `<polyline fill="none" stroke="${COLORS[system] ?? '#000'}" stroke-width="2" points="${points.join(' ')}"/>`,
      );
    }
  }
  systems.forEach((system, index) => {
    parts.push(
      `<text x="${MARGIN + 10 + index * 90}" y="${HEIGHT - 28}" fill="${COLORS[system] ?? '#000'}">■ ${system}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
