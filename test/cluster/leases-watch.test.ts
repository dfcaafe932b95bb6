import { afterAll, describe, expect, it } from 'vitest';
import { SseParser } from '../../src/client/watch.ts';
import {
  eventually,
  get,
  post,
  ProcessCluster,
  REQUEST_TIMEOUT_MS,
  startFormedCluster,
  type NodeProcess,
} from './process-harness.ts';

/**
 * Leases and watch on three real aspen-node processes (election timeout 0.8–1.6 s, so the lease TTL
 * minimum is 3 s): a lease kept alive across a SIGKILL of the leader, its expiry seen by a watcher on
 * another node, and a watcher cut mid-stream twice (its client aborts, then its node is SIGKILLed)
 * that resumes from Last-Event-ID and sees each of 1,000 writes exactly once.
 */
const TTL_SECONDS = 4;
const KEEPALIVE_INTERVAL_MS = 1_000;
/** The key must be gone this long after the lease's deadline (revoke check, proposal, commit, apply). */
const EXPIRY_BOUND_MS = 3_000;
/** Keep the lease alive this long after the leader is killed before letting it lapse (> TTL). */
const KEPT_AFTER_KILL_MS = 5_500;
const COUNTER_WRITES = 1_000;
const WRITERS = 8;
/** Cut the stream after these many events, then again (by killing its node) after the second count. */
const CUT_AFTER_EVENTS = [300, 650] as const;
/** Messages one stream may carry in this test. */
const SSE_MESSAGES_MAX = 10_000;
const WAIT_MS_MAX = 20_000;
const POLL_MS = 50;

/** One cluster per test (node ids repeat); all cleaned up at the end. */
const clusters: ProcessCluster[] = [];
afterAll(() => {
  for (const cluster of clusters) cluster.cleanup();
});

function newCluster(): ProcessCluster {
  const cluster = new ProcessCluster();
  clusters.push(cluster);
  return cluster;
}

const pause = (ms: number) => new Promise((resolvePromise) => setTimeout(resolvePromise, ms));

interface SseMessage {
  readonly event: string;
  readonly id: number | null;
  readonly data: Record<string, unknown>;
}

/** An open GET /watch stream, parsed into messages as they arrive (complete messages only). */
class WatchStream {
  readonly messages: SseMessage[] = [];
  ended = false;
  private readonly controller = new AbortController();
  private readonly parser = new SseParser();

  static async open(node: NodeProcess, query: string, lastEventId?: number): Promise<WatchStream> {
    const stream = new WatchStream();
    const response = await fetch(`${node.http}/watch?${query}`, {
      headers: lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) },
      signal: stream.controller.signal,
    });
    expect(response.status).toBe(200);
    void stream.pump(response);
    return stream;
  }

  /** The last `id:` received: where a resume starts after. */
  get lastId(): number | null {
    for (let index = this.messages.length - 1; index >= 0; index -= 1) {
      const id = this.messages[index]?.id ?? null;
      if (id !== null) return id;
    }
    return null;
  }

  events(): SseMessage[] {
    return this.messages.filter((message) => message.event === 'put' || message.event === 'delete');
  }

  abort(): void {
    this.controller.abort();
  }

  async until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (!check()) {
      if (Date.now() > deadline || this.ended) throw new Error(`${what}: ${JSON.stringify(this.messages)}`);
      await pause(POLL_MS / 10);
    }
  }

  private async pump(response: Response): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        this.split(decoder.decode(chunk, { stream: true }));
      }
    } catch {
      // aborted, or the node died: the messages parsed so far stand
    }
    this.ended = true;
  }

  private split(text: string): void {
    for (const message of this.parser.push(text)) {
      expect(this.messages.length).toBeLessThan(SSE_MESSAGES_MAX);
      this.messages.push({
        event: message.event,
        id: message.id === null ? null : Number(message.id),
        data: JSON.parse(message.data) as Record<string, unknown>,
      });
    }
  }
}

/** One call that may fail while a node is dead or a leader is being elected: null then. */
async function tryPost(
  node: NodeProcess,
  path: string,
  body: unknown,
  timeoutMs: number,
): Promise<Record<string, unknown> | null> {
  try {
    const response = await fetch(`${node.http}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const json = (await response.json()) as Record<string, unknown>;
    return response.status === 200 ? json : null;
  } catch {
    return null;
  }
}

/** A linearizable read through `node`: 200 (present), 404 (absent) or null (no answer). */
async function readStatus(node: NodeProcess, key: string): Promise<200 | 404 | null> {
  try {
    const answer = await get(`${node.http}/read?key=${encodeURIComponent(key)}`);
    if (answer.status === 200) return 200;
    const code = (answer.json.error as { code?: string } | undefined)?.code;
    return code === 'KEY_NOT_FOUND' ? 404 : null;
  } catch {
    return null;
  }
}

/** A read through `node` retried while it has no answer (no leader yet): 200 or 404. */
async function settledReadStatus(node: NodeProcess, key: string): Promise<200 | 404> {
  for (let attempt = 0; attempt < WAIT_MS_MAX / POLL_MS; attempt += 1) {
    const status = await readStatus(node, key);
    if (status !== null) return status;
    await pause(POLL_MS);
  }
  throw new Error(`no answer to a read of ${key}`);
}

/** Keepalives every second, round-robin over the live nodes, until stopped; when each was sent and acknowledged. */
function keepAlive(nodes: () => readonly NodeProcess[], leaseId: number) {
  const log = { lastSentMs: 0, lastAckedSentMs: 0, acked: 0, failed: 0, stopped: false };
  const done = (async () => {
    for (let round = 0; !log.stopped && round < 60; round += 1) {
      const live = nodes();
      const node = live[round % live.length];
      if (node === undefined) throw new Error('no live node');
      const sentMs = performance.now();
      log.lastSentMs = sentMs;
      // A keepalive unanswered within the interval (its node forwards to a dead leader) is given up;
      // the next one goes to the next node, as a client's background keepalive does.
      const answer = await tryPost(node, '/lease/keepalive', { lease_id: leaseId }, KEEPALIVE_INTERVAL_MS);
      if (process.env.ASPEN_TEST_VERBOSE === '1')
        console.log(node.id, Math.round(sentMs), Math.round(performance.now() - sentMs), answer);
      if (answer === null) log.failed += 1;
      else {
        expect(answer).toEqual({ lease_id: leaseId, ttl_seconds: TTL_SECONDS });
        log.acked += 1;
        log.lastAckedSentMs = sentMs;
      }
      await pause(Math.max(0, KEEPALIVE_INTERVAL_MS - (performance.now() - sentMs)));
    }
  })();
  return { log, done };
}

describe('leases and watch on real processes', () => {
  it('a leased key outlives a SIGKILL of the leader while kept alive, then expires; a watcher on another node sees both', async () => {
    const cluster = newCluster();
    const { nodes, leader, follower } = await startFormedCluster(cluster);
    const watcher = await WatchStream.open(follower, 'prefix=svc/');
    // Opened without a start revision: the stream first says where it starts.
    await watcher.until(() => watcher.messages.length > 0, 'no first progress');
    expect(watcher.messages[0]?.event).toBe('progress');

    const grant = await post(`${follower.http}/lease/grant`, { ttl_seconds: TTL_SECONDS });
    expect(grant.status).toBe(200);
    const leaseId = grant.json.lease_id as number;
    const put = await post(`${follower.http}/write`, {
      command: { Set: { key: 'svc/one', value: 'up', lease_id: leaseId } },
    });
    expect(put.status).toBe(200);
    const putRevision = put.json.revision as number;

    let live = [...nodes];
    const renewals = keepAlive(() => live, leaseId);
    await pause(2 * KEEPALIVE_INTERVAL_MS);
    await cluster.kill(leader);
    const killedMs = performance.now();
    live = live.filter((node) => node !== leader);
    await pause(KEPT_AFTER_KILL_MS);
    expect(performance.now() - killedMs).toBeGreaterThan(TTL_SECONDS * 1_000);
    expect(await settledReadStatus(follower, 'svc/one')).toBe(200);
    renewals.log.stopped = true;
    await renewals.done;
    expect(renewals.log.acked).toBeGreaterThanOrEqual(5);

    // Gone within TTL + the bound after the last keepalive sent, never before TTL after the last acknowledged one.
    let goneMs = 0;
    await eventually(
      async () => {
        if ((await readStatus(follower, 'svc/one')) !== 404) return false;
        goneMs = performance.now();
        return true;
      },
      TTL_SECONDS * 1_000 + EXPIRY_BOUND_MS + REQUEST_TIMEOUT_MS,
    );
    expect(goneMs - renewals.log.lastAckedSentMs).toBeGreaterThanOrEqual(TTL_SECONDS * 1_000);
    expect(goneMs - renewals.log.lastSentMs).toBeLessThanOrEqual(TTL_SECONDS * 1_000 + EXPIRY_BOUND_MS);

    await watcher.until(() => watcher.events().length >= 2, 'the watcher did not see the put and the delete');
    const [seenPut, seenDelete, ...more] = watcher.events();
    expect(more).toEqual([]);
    expect(seenPut).toMatchObject({ event: 'put', id: putRevision });
    expect(seenPut?.data).toMatchObject({ type: 'put', key: 'svc/one', value: 'up', lease_id: leaseId });
    expect(seenDelete).toMatchObject({ event: 'delete', data: { type: 'delete', key: 'svc/one' } });
    expect(seenDelete?.id).toBeGreaterThan(putRevision);
    watcher.abort();
    // The lease went with its key.
    const survivor = live[0] as NodeProcess;
    const info = await get(`${survivor.http}/lease/info?lease_id=${leaseId}`);
    expect(info.status).toBe(404);
  }, 60_000);

  it('a watcher cut mid-stream resumes from Last-Event-ID and sees each of 1,000 writes exactly once', async () => {
    const cluster = newCluster();
    const { nodes, leader } = await startFormedCluster(cluster);
    const [first, second] = nodes.filter((node) => node !== leader) as [NodeProcess, NodeProcess];
    const streams = [await WatchStream.open(first, 'key=counter')];
    await streams[0]?.until(() => (streams[0]?.messages.length ?? 0) > 0, 'no first progress');

    // Writers on the leader only (the watched nodes die); each write's revision from its answer.
    const revisions: number[] = [];
    let next = 0;
    const writer = async (): Promise<void> => {
      while (next < COUNTER_WRITES) {
        next += 1;
        const answer = await post(`${leader.http}/write`, {
          command: { Set: { key: 'counter', value: String(next) } },
        });
        expect(answer.status).toBe(200);
        revisions.push(answer.json.revision as number);
      }
    };
    const writing = Promise.all(Array.from({ length: WRITERS }, writer));

    const seen = (): number => streams.reduce((sum, stream) => sum + stream.events().length, 0);
    const resumeFrom = (stream: WatchStream): number => {
      const last = stream.lastId;
      if (last === null) throw new Error('a cut stream had sent no id');
      return last;
    };
    // Cut 1: the client aborts; it resumes on the same node.
    const one = streams[0] as WatchStream;
    await one.until(() => seen() >= CUT_AFTER_EVENTS[0], 'too few events before the first cut');
    one.abort();
    await pause(POLL_MS);
    streams.push(await WatchStream.open(first, 'key=counter', resumeFrom(one)));
    // Cut 2: the node serving the stream is SIGKILLed; it resumes on another node.
    const two = streams[1] as WatchStream;
    await two.until(() => seen() >= CUT_AFTER_EVENTS[1], 'too few events before the second cut');
    await cluster.kill(first);
    await eventually(() => two.ended, WAIT_MS_MAX);
    streams.push(await WatchStream.open(second, 'key=counter', resumeFrom(two)));

    await writing;
    expect(revisions).toHaveLength(COUNTER_WRITES);
    const three = streams[2] as WatchStream;
    await three.until(() => seen() >= COUNTER_WRITES, 'the resumed stream did not catch up');
    await pause(POLL_MS * 4); // nothing more (no duplicate) may follow
    three.abort();

    // Each of the three streams carried part of the history.
    expect(streams.map((stream) => stream.events().length > 0)).toEqual([true, true, true]);
    const events = streams.flatMap((stream) => stream.events());
    const seenRevisions = events.map((event) => event.data.revision as number);
    expect(events.every((event) => event.event === 'put' && event.id === event.data.revision)).toBe(true);
    expect(seenRevisions).toEqual([...revisions].sort((a, b) => a - b));
    // The key agrees: the counter was written 1,000 times, last at the last revision seen.
    const counter = await get(`${second.http}/read?key=counter`);
    expect(counter.json).toMatchObject({
      key: 'counter',
      version: COUNTER_WRITES,
      mod_index: seenRevisions[seenRevisions.length - 1],
    });
  }, 60_000);
});
