import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePortRun } from '../../src/bench/ports.ts';

const LOCAL_BIN = resolve(import.meta.dirname, '../../src/bin/aspen-local.ts');
/** Three nodes start, elect and initialize (or reopen) well within this on a slow machine. */
const RUN_WAIT_MS = 60_000;

interface LocalPorts {
  readonly http: number;
  readonly raft: number;
}

interface LocalRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderrLines: string[];
}

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** `npm start` in `cwd` until it says it is running (then SIGINT) or exits; its output. */
function npmStart(cwd: string, ports: LocalPorts, args: readonly string[] = []): Promise<LocalRun> {
  const child = spawn(process.execPath, [LOCAL_BIN, ...args], {
    cwd,
    env: {
      ...process.env,
      ASPEN_LOCAL_HTTP_PORT_BASE: String(ports.http),
      ASPEN_LOCAL_RAFT_PORT_BASE: String(ports.raft),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    if (stdout.includes('Ctrl-C stops the cluster.')) child.kill('SIGINT');
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`npm start did not finish: ${stdout}\n${stderr}`));
    }, RUN_WAIT_MS);
    // 'close', not 'exit': the last lines may still be in the pipes when the process exits.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderrLines: stderr.split('\n').filter((line) => line.length > 0) });
    });
  });
}

describe('npm start (aspen-local)', () => {
  it(
    'creates a cluster in ./data/local, prints its cookie, reopens it the next time; --log-level is honoured',
    async () => {
      const cwd = mkdtempSync(join(tmpdir(), 'aspen-local-'));
      dirs.push(cwd);
      const ports = { http: await freePortRun(3), raft: await freePortRun(3) };
      const first = await npmStart(cwd, ports);
      expect(first.code, `${first.stdout}\n${first.stderrLines.join('\n')}`).toBe(0);
      expect(first.stdout).toContain(
        'Created a new cluster in ./data/local (rm -rf data/local to start over).',
      );
      expect(first.stdout).toContain('Cookie: aspen-local-cluster');
      for (const id of [1, 2, 3]) expect(existsSync(join(cwd, `data/local/node-${id}/node.key`))).toBe(true);
      expect(existsSync(join(cwd, 'data/node-1'))).toBe(false); // the hand walkthrough's directory stays free
      const lines = first.stderrLines.map(
        (line) => JSON.parse(line) as { node_id: number; level: string; msg: string },
      );
      expect(new Set(lines.map((line) => line.node_id))).toEqual(new Set([1, 2, 3]));
      expect(
        lines.some((line) => line.msg.startsWith('leader elected: ')),
        first.stderrLines.join('\n'),
      ).toBe(true);

      const again = await npmStart(cwd, ports, ['--log-level', 'warn']);
      expect(again.code, again.stdout).toBe(0);
      expect(again.stdout).toContain(
        'Reopened the cluster in ./data/local (rm -rf data/local to start over).',
      );
      const levels = new Set(again.stderrLines.map((line) => (JSON.parse(line) as { level: string }).level));
      expect([...levels].filter((level) => level !== 'warn' && level !== 'error')).toEqual([]);

      const refused = await npmStart(cwd, ports, ['--cookie', 'x']);
      expect(refused.code).toBe(2);
      expect(refused.stderrLines).toEqual(['usage: npm start [-- --log-level error|warn|info|debug]']);
    },
    3 * RUN_WAIT_MS,
  );
});
