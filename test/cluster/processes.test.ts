import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
const STARTUP_TIMEOUT_MS = 20_000;
const children: ChildProcess[] = [];

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

interface Started {
  readonly child: ChildProcess;
  readonly http: string;
  readonly raftAddr: string;
  readonly log: string[];
}

/** Start a real aspen-node process and wait for its "up" line. */
function startProcess(id: number, raftPort: number, httpPort: number, cookie: string): Promise<Started> {
  const child = spawn(process.execPath, [BIN, '--node-id', String(id), '--port', String(raftPort), '--cookie', cookie,
    '--http-addr', `127.0.0.1:${httpPort}`, '--storage', 'memory', '--heartbeat-interval-ms', '50',
    '--election-timeout-min-ms', '300', '--election-timeout-max-ms', '600'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const log: string[] = [];
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => { reject(new Error(`node ${id} did not start: ${log.join('\n')}`)); }, STARTUP_TIMEOUT_MS);
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      log.push(...text.split('\n').filter((line) => line.length > 0));
      if (text.includes(' up: ')) {
        clearTimeout(timer);
        resolvePromise({ child, http: `http://127.0.0.1:${httpPort}`, raftAddr: `127.0.0.1:${raftPort}`, log });
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`node ${id} exited with ${code}: ${log.join('\n')}`)); });
  });
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

async function eventually(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await new Promise((resolvePromise) => setTimeout(resolvePromise, 50));
  expect(check()).toBe(true);
}

describe('aspen-node processes', () => {
  it("the README's walkthrough works across processes; a node with another cookie cannot join", async () => {
    const base = 33_000 + Math.floor(Math.random() * 1_000) * 4;
    const nodes = await Promise.all([1, 2, 3].map((id) => startProcess(id, base + id, base + 100 + id, 'my-cluster')));
    const [one, two, three] = nodes as [Started, Started, Started];
    const member = (id: number, node: Started) => ({ id, addr: `node-${id}`, raft_addr: node.raftAddr });
    expect((await post(`${one.http}/init`, { initial_members: [member(1, one)] })).status).toBe(200);
    expect((await post(`${one.http}/add-learner`, { learner: member(2, two) })).status).toBe(200);
    expect((await post(`${one.http}/add-learner`, { learner: member(3, three) })).status).toBe(200);
    expect((await post(`${one.http}/change-membership`, { members: [1, 2, 3] })).json).toMatchObject({ members: [1, 2, 3] });
    expect((await post(`${two.http}/write`, { command: { Set: { key: 'greeting', value: 'hello world' } } })).status).toBe(200);
    const read = await fetch(`${three.http}/read?key=greeting`);
    expect(await read.json()).toMatchObject({ key: 'greeting', value: 'hello world' });

    // A node with another cookie that believes node 1 is its peer: it can neither win a vote nor write.
    const stranger = await startProcess(4, base + 4, base + 104, 'another-cluster');
    expect((await post(`${stranger.http}/init`, { initial_members: [member(4, stranger), member(1, one)] })).status).toBe(200);
    await eventually(() => stranger.log.some((line) => line.includes('refused connection')) && one.log.some((line) => line.includes('refused connection')), 15_000);
    const strangerWrite = await post(`${stranger.http}/write`, { command: { Set: { key: 'greeting', value: 'intruder' } } });
    expect(strangerWrite.status).toBe(503);
    const after = await fetch(`${three.http}/read?key=greeting`);
    expect(await after.json()).toMatchObject({ value: 'hello world' });

    // SIGTERM shuts a node down in order and exits 0.
    const exited = new Promise<number | null>((resolvePromise) => { two.child.on('exit', resolvePromise); });
    two.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 90_000);
});
