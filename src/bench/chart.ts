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

/** One line of a memory chart: a member's RSS (bytes) at each key count loaded. */
export interface MemorySeries {
  readonly system: string;
  readonly member: string;
  readonly points: readonly (readonly [keys: number, bytes: number])[];
}

const MEMORY_DASHES = ['', '6 3', '2 3', '8 3 2 3'];
const MEBIBYTE = 2 ** 20;

/** RSS per member against keys loaded, one colour per system and one dash per member, as plain SVG. */
export function memoryChartSvg(series: readonly MemorySeries[], title: string): string {
  const left = MARGIN + 20;
  const right = WIDTH - MARGIN;
  const top = 40;
  const bottom = HEIGHT - MARGIN - 30;
  const all = series.flatMap((line) => line.points);
  const maxKeys = Math.max(1, ...all.map(([keys]) => keys));
  const maxMib = Math.max(1, ...all.map(([, bytes]) => bytes / MEBIBYTE)) * 1.1;
  const x = (keys: number) => left + ((right - left) * keys) / maxKeys;
  const y = (bytes: number) => bottom - ((bottom - top) * bytes) / MEBIBYTE / maxMib;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<text x="${WIDTH / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
    `<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#888"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#888"/>`,
    `<text x="${(left + right) / 2}" y="${bottom + 28}" text-anchor="middle">keys loaded</text>`,
    `<text x="${left - 4}" y="${top + 4}" text-anchor="end">${Math.round(maxMib)} MiB</text>`,
    `<text x="${left - 4}" y="${bottom + 4}" text-anchor="end">0</text>`,
    `<text x="${right}" y="${bottom + 16}" text-anchor="end">${maxKeys.toLocaleString('en-US')}</text>`,
    `<text x="${left - 4}" y="${(top + bottom) / 2 + 4}" text-anchor="end">${Math.round(maxMib / 2)}</text>`,
    `<text x="${(left + right) / 2}" y="${bottom + 16}" text-anchor="middle">${Math.round(maxKeys / 2).toLocaleString('en-US')}</text>`,
  ];
  const systems = [...new Set(series.map((line) => line.system))];
  series.forEach((line, index) => {
    const points = line.points.map(([keys, bytes]) => `${x(keys).toFixed(1)},${y(bytes).toFixed(1)}`);
    // Members of a system share its colour and differ by dash; the legend has a row per system.
    const rank = series.slice(0, index).filter((other) => other.system === line.system).length;
    const row = systems.indexOf(line.system);
    const dash = MEMORY_DASHES[rank % MEMORY_DASHES.length] ?? '';
    const color = COLORS[line.system] ?? '#000';
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2"${dash === '' ? '' : ` stroke-dasharray="${dash}"`} points="${points.join(' ')}"/>`,
      `<line x1="${left + rank * 160}" y1="${HEIGHT - 16 - row * 16}" x2="${left + rank * 160 + 30}" y2="${HEIGHT - 16 - row * 16}" stroke="${color}" stroke-width="2"${dash === '' ? '' : ` stroke-dasharray="${dash}"`}/>`,
      `<text x="${left + rank * 160 + 36}" y="${HEIGHT - 12 - row * 16}" fill="${color}">${line.system} ${line.member}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
