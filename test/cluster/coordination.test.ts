import { afterAll, describe, expect, it } from 'vitest';
import { formCluster, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * CAS and transactions on real aspen-node processes (LMDB) while the leader is SIGKILLed and
 * restarted twice. Clients speak raw HTTP, spread over every node, and sort each answer into applied,
 * not applied, or in doubt (a lost answer, or an error with definite:false).
 */
const CLIENTS = 8;
const INCREMENTS_PER_CLIENT = 12;
const ACCOUNTS = 10;
const ACCOUNT_START = 100;
const TRANSFERS_PER_CLIENT = 12;
/** A client's attempts at one operation before the test gives up on the cluster. */
const ATTEMPTS_MAX = 200;
const CALL_TIMEOUT_MS = 4_000;
const RETRY_PAUSE_MS = 50;
/** Restart a killed leader after this long (the survivors elect a new one meanwhile). */
const RESTART_AFTER_MS = 1_500;

/** One cluster per test (node ids and ports repeat); all cleaned up at the end. */
const clusters: ProcessCluster[] = [];
afterAll(() => {
  for (const cluster of clusters) cluster.cleanup();
});

type Answer =
  | { readonly kind: 'ok'; readonly json: Record<string, unknown> }
  | { readonly kind: 'refused'; readonly code: string }
  | { readonly kind: 'in_doubt' };

const pause = (ms: number) => new Promise((resolvePromise) => setTimeout(resolvePromise, ms));

/** One HTTP call: a refused connection never reached the node; any other lost answer is in doubt. */
async function call(node: NodeProcess, path: string, body?: unknown): Promise<Answer> {
  try {
    const response = await fetch(`${node.http}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
    const json = (await response.json()) as Record<string, unknown>;
    if (response.ok) return { kind: 'ok', json };
    const error = json.error as { code: string; definite: boolean };
    return error.definite ? { kind: 'refused', code: error.code } : { kind: 'in_doubt' };
  } catch (error) {
    const code = (error as { cause?: { code?: string } }).cause?.code;
    return code === 'ECONNREFUSED' ? { kind: 'refused', code } : { kind: 'in_doubt' };
  }
}

/** The nodes of the cluster as they are now (a restarted node is a new process). */
class Nodes {
  private readonly current = new Map<number, NodeProcess>();
  private readonly cluster: ProcessCluster;

  constructor(cluster: ProcessCluster, nodes: readonly NodeProcess[]) {
    this.cluster = cluster;
    for (const node of nodes) this.current.set(node.id, node);
  }

  pick(seed: number): NodeProcess {
    const all = [...this.current.values()];
    const node = all[seed % all.length];
    if (node === undefined) throw new Error('no nodes');
    return node;
  }

  /** SIGKILL the leader, restart it on its data dir after a pause; resolves once it is back. */
  async bounceLeader(dataDirs: ReadonlyMap<number, string>): Promise<void> {
    const leaderId = await this.leader();
    const leader = this.current.get(leaderId);
    if (leader === undefined) throw new Error(`no leader ${leaderId}`);
    await this.cluster.kill(leader);
    await pause(RESTART_AFTER_MS);
    const dataDir = dataDirs.get(leaderId);
    if (dataDir === undefined) throw new Error('no data dir');
    this.current.set(leaderId, await this.cluster.start(leaderId, { dataDir }));
  }

  private async leader(): Promise<number> {
    for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt += 1) {
      const answer = await call(this.pick(attempt), '/leader');
      if (answer.kind === 'ok' && typeof answer.json.leader === 'number') return answer.json.leader;
      await pause(RETRY_PAUSE_MS);
    }
    throw new Error('no leader');
  }
}

/** A linearizable read through any node: the value, or null when the key is absent. */
async function read(nodes: Nodes, key: string, seed: number): Promise<string | null> {
  for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt += 1) {
    const node = nodes.pick(seed + attempt);
    const response = await fetch(`${node.http}/read?key=${encodeURIComponent(key)}`, {
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    }).catch(() => null);
    if (response?.status === 200) return ((await response.json()) as { value: string }).value;
    if (response?.status === 404) {
      const body = (await response.json()) as { error?: { code?: string } };
      if (body.error?.code === 'KEY_NOT_FOUND') return null;
    }
    await pause(RETRY_PAUSE_MS);
  }
  throw new Error(`cannot read ${key}`);
}

async function formWithData(): Promise<{ nodes: Nodes; dataDirs: Map<number, string> }> {
  const cluster = new ProcessCluster();
  clusters.push(cluster);
  const dataDirs = new Map<number, string>();
  const started = await Promise.all(
    [1, 2, 3].map((id) => {
      const dataDir = cluster.tempDir();
      dataDirs.set(id, dataDir);
      return cluster.start(id, { dataDir });
    }),
  );
  await formCluster(cluster, started);
  return { nodes: new Nodes(cluster, started), dataDirs };
}

/**
 * One CAS increment of `counter`, exactly once: the transaction compares the value read and, on
 * success, also writes this increment's receipt key. After an answer in doubt the receipt (read
 * linearizably) says whether it applied; a stale copy applying later fails its compare, because
 * the counter only grows.
 */
async function increment(nodes: Nodes, client: number, n: number): Promise<'answered' | 'resolved'> {
  const receipt = `receipt/${client}/${n}`;
  let doubted = false;
  for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt += 1) {
    if (doubted && (await read(nodes, receipt, client + attempt)) !== null) return 'resolved';
    const value = await read(nodes, 'counter', client + attempt);
    if (value === null) throw new Error('the counter exists from the start');
    const next = String(Number(value) + 1);
    const answer = await call(nodes.pick(client + attempt), '/write', {
      command: {
        Transaction: {
          compare: [{ key: 'counter', target: 'value', op: 'equal', value }],
          success: [{ Set: { key: 'counter', value: next } }, { Set: { key: receipt, value: next } }],
          failure: [],
        },
      },
    });
    if (answer.kind === 'ok' && answer.json.succeeded === true) return 'answered';
    if (answer.kind === 'in_doubt') doubted = true;
    else await pause(answer.kind === 'refused' ? RETRY_PAUSE_MS : 0);
  }
  throw new Error(`client ${client} could not increment (${n})`);
}

describe('compare-and-swap and transactions on real processes while the leader is killed', () => {
  it('8 clients increment one counter with CAS: the counter equals the increments acknowledged', async () => {
    const { nodes, dataDirs } = await formWithData();
    const created = await call(nodes.pick(0), '/write', {
      command: { CompareAndSwap: { key: 'counter', expected: null, new_value: '0' } },
    });
    expect(created.kind).toBe('ok');
    const done = { answered: 0, resolved: 0 };
    let finished = 0;
    const clients = Array.from({ length: CLIENTS }, async (_, client) => {
      for (let n = 0; n < INCREMENTS_PER_CLIENT; n += 1) done[await increment(nodes, client, n)] += 1;
      finished += 1;
    });
    const bounces = (async () => {
      for (const share of [3, 1.5]) {
        const target = (CLIENTS * INCREMENTS_PER_CLIENT) / share;
        while (done.answered + done.resolved < target && finished < CLIENTS) await pause(RETRY_PAUSE_MS);
        await nodes.bounceLeader(dataDirs);
      }
    })();
    await Promise.all([...clients, bounces]);
    const counter = Number(await read(nodes, 'counter', 0));
    if (process.env.ASPEN_TEST_VERBOSE === '1') console.log({ counter, ...done });
    expect(done.answered + done.resolved).toBe(CLIENTS * INCREMENTS_PER_CLIENT);
    expect(counter).toBe(CLIENTS * INCREMENTS_PER_CLIENT);
    // Every receipt names a distinct value of the counter: no increment applied twice or lost.
    const receipts = new Set<string>();
    for (let client = 0; client < CLIENTS; client += 1)
      for (let n = 0; n < INCREMENTS_PER_CLIENT; n += 1) {
        const value = await read(nodes, `receipt/${client}/${n}`, client);
        expect(value, `receipt ${client}/${n}`).not.toBeNull();
        receipts.add(value ?? '');
      }
    expect(receipts.size).toBe(CLIENTS * INCREMENTS_PER_CLIENT);
  }, 180_000);

  it('bank transfers between 10 accounts keep the total at every linearizable read', async () => {
    const { nodes, dataDirs } = await formWithData();
    const accounts = Array.from({ length: ACCOUNTS }, (_, index) => `acct/${String(index).padStart(2, '0')}`);
    const opening = await call(nodes.pick(0), '/write', {
      command: { SetMulti: { pairs: accounts.map((key) => [key, String(ACCOUNT_START)]) } },
    });
    expect(opening.kind).toBe('ok');
    const totals: number[] = [];
    let finished = 0;
    let transfers = 0;
    const audit = async (seed: number) => {
      const answer = await call(nodes.pick(seed), '/scan', { prefix: 'acct/' });
      if (answer.kind !== 'ok') return;
      const entries = answer.json.entries as { value: string }[];
      expect(entries).toHaveLength(ACCOUNTS);
      totals.push(entries.reduce((sum, entry) => sum + Number(entry.value), 0));
    };
    const client = async (index: number) => {
      for (let round = 0; round < TRANSFERS_PER_CLIENT; round += 1) {
        const from = accounts[(index + round) % ACCOUNTS] ?? '';
        const to = accounts[(index + round * 3 + 1) % ACCOUNTS] ?? '';
        if (from === to) continue;
        for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt += 1) {
          const a = await read(nodes, from, index);
          const b = await read(nodes, to, index);
          if (a === null || b === null) throw new Error('accounts exist from the start');
          const amount = 1 + ((index + round) % 7);
          const answer = await call(nodes.pick(index + attempt), '/write', {
            command: {
              Transaction: {
                compare: [
                  { key: from, target: 'value', op: 'equal', value: a },
                  { key: to, target: 'value', op: 'equal', value: b },
                ],
                success: [
                  { Set: { key: from, value: String(Number(a) - amount) } },
                  { Set: { key: to, value: String(Number(b) + amount) } },
                ],
                failure: [],
              },
            },
          });
          await audit(index + attempt);
          // In doubt: the transfer is atomic either way, so moving on keeps the total.
          if (answer.kind === 'in_doubt' || (answer.kind === 'ok' && answer.json.succeeded === true)) break;
          await pause(RETRY_PAUSE_MS);
        }
        transfers += 1;
      }
      finished += 1;
    };
    const bounces = (async () => {
      for (const share of [3, 1.5]) {
        const target = (CLIENTS * TRANSFERS_PER_CLIENT) / share;
        while (transfers < target && finished < CLIENTS) await pause(RETRY_PAUSE_MS);
        await nodes.bounceLeader(dataDirs);
      }
    })();
    await Promise.all([...Array.from({ length: CLIENTS }, (_, index) => client(index)), bounces]);
    await audit(0);
    expect(totals.length).toBeGreaterThan(CLIENTS * 2);
    expect(new Set(totals)).toEqual(new Set([ACCOUNTS * ACCOUNT_START]));
  }, 180_000);
});
