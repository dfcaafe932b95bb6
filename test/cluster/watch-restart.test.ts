import { afterAll, describe, expect, it } from 'vitest';
import { SseParser } from '../../src/client/watch.ts';
import { get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

const WAIT_MS_MAX = 20_000;
const POLL_MS = 50;
/** SSE messages this test reads from one stream at most. */
const SSE_MESSAGES_MAX = 100;

async function waitForLeader(node: NodeProcess): Promise<void> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while ((await get(`${node.http}/leader`)).json.leader !== node.id) {
    if (Date.now() > deadline) throw new Error(`node ${node.id} did not become leader`);
    await new Promise((resolvePromise) => setTimeout(resolvePromise, POLL_MS));
  }
}

async function write(node: NodeProcess, command: unknown): Promise<number> {
  const answer = await post(`${node.http}/write`, { command });
  expect(answer.status).toBe(200);
  return answer.json.revision as number;
}

/** Read a watch stream until it has carried `count` events; each as "revision type key=value". */
async function watchEvents(node: NodeProcess, query: string, count: number): Promise<string[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort();
  }, WAIT_MS_MAX);
  const response = await fetch(`${node.http}/watch?${query}`, { signal: controller.signal });
  expect(response.status).toBe(200);
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const events: string[] = [];
  let messages = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      for (const message of parser.push(decoder.decode(chunk, { stream: true }))) {
        messages += 1;
        expect(messages).toBeLessThanOrEqual(SSE_MESSAGES_MAX);
        expect(message.event).not.toBe('canceled');
        if (message.event !== 'put' && message.event !== 'delete') continue;
        const data = JSON.parse(message.data) as { revision: number; key: string; value: string };
        events.push(`${data.revision} ${message.event} ${data.key}=${data.value}`);
      }
      if (events.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return events;
}

describe('watch history after a restart on LMDB', () => {
  it('a restarted node serves a watch from a revision before its restart, from its log', async () => {
    const dataDir = cluster.tempDir();
    const flags = ['--log-level', 'debug'];
    let node = await cluster.start(1, { dataDir, flags });
    expect((await post(`${node.http}/init`, { initial_members: [cluster.member(node)] })).status).toBe(200);
    await waitForLeader(node);
    const first = await write(node, { Set: { key: 'w/a', value: '1' } });
    const second = await write(node, { Set: { key: 'w/b', value: '2' } });
    const third = await write(node, { Delete: { key: 'w/a' } });
    await write(node, { Set: { key: 'other', value: 'x' } });

    // A clean stop: the restarted node trusts its LMDB state machine and applies nothing again.
    const exited = new Promise((resolvePromise) => {
      node.child.once('exit', resolvePromise);
    });
    node.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    node = await cluster.start(1, { dataDir, flags });
    await waitForLeader(node);
    expect(
      node.log.some((line) => line.includes('watch: history rebuilt from the log from revision 1')),
    ).toBe(true);
    const applied = Number((await get(`${node.http}/metrics`)).json.last_applied);
    expect(applied).toBeGreaterThan(third);

    const events = await watchEvents(node, `prefix=w/&start_revision=${first}`, 3);
    expect(events).toEqual([`${first} put w/a=1`, `${second} put w/b=2`, `${third} delete w/a=`]);
    // After the restart too: a write lands in the same stream order.
    const fourth = await write(node, { Set: { key: 'w/c', value: '3' } });
    expect(await watchEvents(node, `prefix=w/&start_revision=${second}`, 3)).toEqual([
      `${second} put w/b=2`,
      `${third} delete w/a=`,
      `${fourth} put w/c=3`,
    ]);
  }, 90_000);
});
