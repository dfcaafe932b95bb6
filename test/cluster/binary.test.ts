import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prettyLine } from '../../src/cluster/logger.ts';
import { freePort, get } from './process-harness.ts';

const NODE_BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
const CLI_BIN = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const VERSION = (
  JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as {
    version: string;
  }
).version;
/** A node that starts, serves one request and stops does it well within this. */
const RUN_WAIT_MS = 30_000;
const POLL_MS = 50;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderrLines: string[];
}

/** Run a binary to its exit; `whileUp` runs once its HTTP port answers, then it gets SIGTERM. */
function run(bin: string, args: readonly string[], httpUrl: string | null = null): Promise<Run> {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<Run>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${bin} did not exit: ${stderr}`));
    }, RUN_WAIT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderrLines: stderr.split('\n').filter((line) => line.length > 0) });
    });
  });
  if (httpUrl !== null) {
    void (async () => {
      for (let attempt = 0; attempt * POLL_MS < RUN_WAIT_MS; attempt += 1) {
        const answered = await get(`${httpUrl}/health`).then(
          () => true,
          () => false,
        );
        if (answered) break;
        await new Promise((resolvePromise) => setTimeout(resolvePromise, POLL_MS));
      }
      child.kill('SIGTERM');
    })();
  }
  return exited;
}

async function nodeAt(level: string): Promise<Run> {
  const httpPort = await freePort();
  return run(
    NODE_BIN,
    [
      '--node-id',
      '7',
      '--port',
      String(await freePort()),
      '--http-addr',
      `127.0.0.1:${httpPort}`,
      '--cookie',
      'binary-test-cookie-long-enough',
      '--storage',
      'memory',
      '--disable-mdns',
      '--disable-gossip',
      '--log-level',
      level,
    ],
    `http://127.0.0.1:${httpPort}`,
  );
}

interface LogLine {
  readonly level: string;
  readonly node_id: number;
  readonly component: string;
  readonly msg: string;
  readonly time: string;
  readonly reqId?: string;
}

describe('aspen-node logs', () => {
  it('one JSON object per line with node_id and component, at --log-level and above, Fastify included', async () => {
    const runs = new Map<string, LogLine[]>();
    for (const level of ['debug', 'info', 'warn', 'error']) {
      const result = await nodeAt(level);
      expect({ level, code: result.code }).toEqual({ level, code: 0 });
      runs.set(
        level,
        result.stderrLines.map((line) => JSON.parse(line) as LogLine),
      );
    }
    for (const [level, lines] of runs) {
      for (const line of lines) {
        expect({ level, line }).toMatchObject({
          level,
          line: {
            node_id: 7,
            component: expect.any(String) as string,
            msg: expect.any(String) as string,
            time: expect.any(String) as string,
          },
        });
      }
    }
    const levels = (level: string) => new Set((runs.get(level) ?? []).map((line) => line.level));
    const messages = (level: string) => (runs.get(level) ?? []).map((line) => line.msg);
    expect(levels('debug').has('debug')).toBe(true);
    expect(messages('debug')).toContain('start: storage');
    expect(levels('info').has('debug')).toBe(false);
    expect(messages('info').some((msg) => msg.startsWith('node 7 up: '))).toBe(true);
    expect(messages('info').some((msg) => msg.startsWith('SIGTERM: shutting down'))).toBe(true);
    // Fastify's request lines come through the node's logger, at debug, with the request's id.
    const requests = (level: string) =>
      (runs.get(level) ?? []).filter((line) => line.component === 'http' && line.reqId !== undefined);
    expect(requests('debug').map((line) => line.msg)).toContainEqual(
      expect.stringMatching(/^GET \/health 200 in [\d.]+ ms$/),
    );
    expect(requests('debug').every((line) => line.level === 'debug')).toBe(true);
    expect(requests('info')).toEqual([]);
    expect([...levels('warn')].filter((level) => level !== 'warn')).toEqual([]); // no info line at warn
    expect(runs.get('error')).toEqual([]); // a clean start and stop has nothing at error level
    expect((runs.get('debug') ?? []).length).toBeGreaterThan((runs.get('info') ?? []).length);
  }, 90_000);
});

describe('logs on a terminal', () => {
  it('are one compact line per entry: the node, time, level, component, message', () => {
    const json =
      '{"level":"warn","time":"2026-12-01T18:00:00.123Z","node_id":3,"component":"node","msg":"stop http: gone"}';
    expect(prettyLine(json)).toBe('[node 3] 18:00:00.123 WARN  node       stop http: gone\n');
    const request =
      '{"level":"debug","time":"2026-12-01T18:00:00.123Z","node_id":1,"component":"http","reqId":"req-7","msg":"GET /health 200 in 1.2 ms"}';
    expect(prettyLine(request)).toBe(
      '[node 1] 18:00:00.123 DEBUG http       req-7 GET /health 200 in 1.2 ms\n',
    );
    const refusal =
      '{"level":"warn","time":"2026-12-01T18:00:00.123Z","node_id":2,"component":"transport","peer_id":"12D3KooWx","msg":"auth: refused connection from 1.2.3.4"}';
    expect(prettyLine(refusal)).toBe(
      '[node 2] 18:00:00.123 WARN  transport  auth: refused connection from 1.2.3.4 (peer 12D3KooWx)\n',
    );
  });
});

describe('--version', () => {
  it('aspen-node and aspen print the package version and exit 0', async () => {
    expect(await run(NODE_BIN, ['--version'])).toEqual({ code: 0, stdout: `${VERSION}\n`, stderrLines: [] });
    expect(await run(CLI_BIN, ['--version'])).toEqual({ code: 0, stdout: `${VERSION}\n`, stderrLines: [] });
  }, 30_000);

  it("aspen-node's --help says the Raft port is QUIC on UDP and TCP", async () => {
    const help = await run(NODE_BIN, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout.replace(/\s+/g, ' ')).toContain(
      '--port <port> Raft transport port: QUIC on this UDP port, TCP on this TCP port',
    );
  }, 30_000);
});
