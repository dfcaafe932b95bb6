import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError, type WatchUpdate } from '../../src/client/index.ts';
import {
  consume,
  SseParser,
  WATCH_REVISION_BYTES_MAX,
  WATCH_REVISION_EVENTS_MAX,
  type Position,
  type WatchOptions,
} from '../../src/client/watch.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { WatchHub } from '../../src/node/watch-hub.ts';
import { unusedController, unusedStore } from '../support/unused-services.ts';
import { realNode } from './real-node.ts';
import { outcome, put } from '../support/watch-changes.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const FAST_RETRY = { attemptsMax: 20, totalMsMax: 5_000, backoffMsMin: 5, backoffMsMax: 20 };
const WAIT_MS_MAX = 5_000;

/** A node's HTTP API with a hub fed by hand (the same history on every "node"). */
async function watchNode(appliedIndex = 0) {
  const hub = new WatchHub({ clock: systemClock, appliedIndex });
  const app = buildHttpServer({
    controller: unusedController,
    store: unusedStore,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    watch: hub,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const stop = async () => {
    const closing = app.close();
    app.server.closeAllConnections();
    await closing;
  };
  cleanups.push(stop);
  return { hub, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, stop };
}

/** Collect a watch's updates in the background. */
function collect(updates: AsyncIterable<WatchUpdate>) {
  const seen: WatchUpdate[] = [];
  let failure: unknown = null;
  let done = false;
  const running = (async () => {
    try {
      for await (const update of updates) seen.push(update);
    } catch (error) {
      failure = error;
    }
    done = true;
  })();
  const until = async (check: () => boolean) => {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out; seen ${JSON.stringify(seen)}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  return {
    seen,
    running,
    until,
    get failure() {
      return failure;
    },
    get done() {
      return done;
    },
    revisions: () => seen.filter((update) => update.events.length > 0).map((update) => update.revision),
  };
}

describe('KvClient.watch', () => {
  it('yields one update per revision, starting with where it starts, and ends on abort', async () => {
    const node = await watchNode(3);
    const kv = new KvClient({ endpoints: [node.url] });
    const abort = new AbortController();
    const watch = collect(kv.watch('a', { prefix: true, signal: abort.signal, prevKv: true }));
    await watch.until(() => watch.seen.length === 1);
    expect(watch.seen[0]).toEqual({ revision: 3, events: [] });
    node.hub.applied(4, outcome(4, [put('a/1', 'x', 4), put('b', 'y', 4), put('a/2', 'z', 4)]));
    node.hub.applied(5, outcome(5, [put('b', 'y', 5)]));
    node.hub.applied(6, outcome(6, [put('a', 'w', 6)]));
    await watch.until(() => watch.revisions().length === 2);
    expect(watch.seen[1]?.events.map((event) => [event.key, event.revision, event.prev])).toEqual([
      ['a/1', 4, null],
      ['a/2', 4, null],
    ]);
    expect(watch.revisions()).toEqual([4, 6]);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('resumes on another endpoint when its node goes down, without gap or duplicate', async () => {
    const first = await watchNode();
    const second = await watchNode();
    const kv = new KvClient({ endpoints: [first.url, second.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { startRevision: 1, signal: abort.signal }));
    const apply = (index: number) => {
      for (const node of [first, second])
        node.hub.applied(index, outcome(index, [put('k', `v${index}`, index)]));
    };
    for (let index = 1; index <= 5; index += 1) apply(index);
    await watch.until(() => watch.revisions().length === 5);
    await first.stop();
    for (let index = 6; index <= 10; index += 1) apply(index);
    await watch.until(() => watch.revisions().length === 10);
    expect(watch.revisions()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    abort.abort();
    await watch.running;
  });

  it('rejects with COMPACTED and the compact revision when the start is older than the history', async () => {
    const node = await watchNode(20);
    const kv = new KvClient({ endpoints: [node.url] });
    const watch = collect(kv.watch('k', { startRevision: 3 }));
    await watch.running;
    expect(watch.failure).toBeInstanceOf(KvError);
    expect(watch.failure).toMatchObject({ code: 'COMPACTED', compactRevision: 21, status: 410 });
  });

  it('gives up after the retry policy when no node answers', async () => {
    const kv = new KvClient({
      endpoints: ['http://127.0.0.1:1'],
      retry: { attemptsMax: 3, totalMsMax: 2_000, backoffMsMin: 1, backoffMsMax: 5 },
    });
    const watch = collect(kv.watch('k'));
    await watch.running;
    expect(watch.failure).toMatchObject({ code: 'CONNECTION' });
  });
});

describe('KvClient.watch against a scripted server', () => {
  /** Each request gets the next scripted answer; the start revisions asked for are recorded. */
  async function scripted(answers: ((response: ServerResponse) => void)[]) {
    const asked: (string | null)[] = [];
    const server = createServer((request: IncomingMessage, response: ServerResponse) => {
      asked.push(new URL(request.url ?? '/', 'http://x').searchParams.get('start_revision'));
      const answer = answers.shift();
      if (answer === undefined) {
        response.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
        return; // stays open
      }
      answer(response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => {
            resolve();
          });
        }),
    );
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked };
  }

  /**
   * Watch a scripted server until it has had `requests` requests, then stop: the start revisions
   * asked for and the revisions yielded (progress ones too). The watch must not have failed.
   */
  async function watchUntilAsked(
    requests: number,
    keyOrPrefix: string,
    options: WatchOptions,
    answers: ((response: ServerResponse) => void)[],
  ): Promise<{ asked: (string | null)[]; revisions: number[] }> {
    const server = await scripted(answers);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch(keyOrPrefix, { ...options, signal: abort.signal }));
    await watch.until(() => server.asked.length === requests);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
    return { asked: server.asked, revisions: watch.seen.map((update) => update.revision) };
  }

  /** A whole stream, with the node's start header when given. */
  const sse = (text: string, start?: string) => (response: ServerResponse) => {
    response.writeHead(200, {
      'content-type': 'text/event-stream',
      ...(start === undefined ? {} : { 'x-aspen-watch-start': start }),
    });
    response.end(text);
  };
  const put = (revision: number, key: string, id: boolean) =>
    `event: put\n${id ? `id: ${revision}\n` : ''}data: ${JSON.stringify({ type: 'put', key, value: 'v', create_index: revision, mod_index: revision, version: 1, lease_id: 0, revision })}\n\n`;

  it('drops a revision cut in the middle and asks for it again; a canceled stream resumes after its revision', async () => {
    const server = await scripted([
      sse(`${put(7, 'a', true)}${put(8, 'a', false)}`), // cut inside revision 8
      sse(
        `${put(8, 'a', false)}${put(8, 'b', true)}: a comment\n\nevent: canceled\ndata: {"reason":"slow consumer: 3 revisions behind","revision":11}\n\n`,
      ),
      sse(`event: progress\nid: 15\ndata: {"revision":15}\n\n`),
    ]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('', { prefix: true, startRevision: 7, signal: abort.signal }));
    await watch.until(() => server.asked.length === 4);
    expect(server.asked).toEqual(['7', '8', '12', '16']);
    expect(watch.seen.map((update) => [update.revision, update.events.map((event) => event.key)])).toEqual([
      [7, ['a']],
      [8, ['a', 'b']],
      [15, []],
    ]);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('the call timeout bounds the answer only, never a quiet stream', async () => {
    const server = await scripted([]);
    const kv = new KvClient({ endpoints: [server.url], timeoutMs: 100, retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { startRevision: 1, progressIntervalMs: 0, signal: abort.signal }));
    await new Promise((resolveWait) => setTimeout(resolveWait, 400));
    expect(server.asked).toEqual(['1']);
    expect(watch.done).toBe(false);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('a malformed stream is a failed attempt: it resumes elsewhere, then ends with BAD_RESPONSE', async () => {
    const garbled = sse('event: put\nid: 3\ndata: {"revision": 4}\n\n');
    const server = await scripted([garbled, garbled, garbled]);
    const kv = new KvClient({ endpoints: [server.url], retry: { ...FAST_RETRY, attemptsMax: 3 } });
    const watch = collect(kv.watch('k', { startRevision: 1 }));
    await watch.running;
    expect(watch.failure).toMatchObject({ code: 'BAD_RESPONSE' });
    expect(server.asked).toEqual(['1', '1', '1']);
    expect(watch.seen).toEqual([]);
  });

  const refuse = (compactRevision: number) => (response: ServerResponse) => {
    response.writeHead(410, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        error: { code: 'COMPACTED', message: 'too old', definite: true, compact_revision: compactRevision },
      }),
    );
  };
  const progress = (revision: number) =>
    `event: progress\nid: ${revision}\ndata: {"revision":${revision}}\n\n`;

  it('410 from one node resumes on another that still holds the revision', async () => {
    const follower = await scripted([refuse(9)]);
    const leader = await scripted([sse(`${put(3, 'k', true)}${put(4, 'k', true)}`)]);
    const kv = new KvClient({ endpoints: [follower.url, leader.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { startRevision: 3, signal: abort.signal }));
    await watch.until(() => watch.revisions().length === 2 && leader.asked.length === 2);
    expect(watch.revisions()).toEqual([3, 4]);
    expect(follower.asked).toEqual(['3']);
    expect(leader.asked).toEqual(['3', '5']);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('410 is final once every endpoint refused the start, with the highest compact revision, whatever the retry policy', async () => {
    const first = await scripted([refuse(9)]);
    const second = await scripted([refuse(12)]);
    const third = await scripted([refuse(10)]);
    const kv = new KvClient({
      endpoints: [first.url, second.url, third.url],
      retry: { ...FAST_RETRY, attemptsMax: 1 },
    });
    const watch = collect(kv.watch('k', { startRevision: 3 }));
    await watch.running;
    expect(watch.failure).toMatchObject({ code: 'COMPACTED', compactRevision: 12, status: 410 });
    expect(String(watch.failure)).toMatch(
      /refused by every endpoint: 3; the oldest revision one serves is 12/,
    );
    expect([first.asked, second.asked, third.asked]).toEqual([['3'], ['3'], ['3']]);
  });

  it('410 from one node and no answer from the other ends with the outage, not COMPACTED', async () => {
    const follower = await scripted([refuse(9), refuse(9)]);
    const kv = new KvClient({
      endpoints: [follower.url, 'http://127.0.0.1:1'],
      retry: { ...FAST_RETRY, attemptsMax: 4 },
    });
    const watch = collect(kv.watch('k', { startRevision: 3 }));
    await watch.running;
    expect(watch.failure).toMatchObject({ code: 'CONNECTION' });
    expect(follower.asked).toEqual(['3']); // never asked again for a start it refused
  });

  it('a "compacted" cancel moves on to another node at once', async () => {
    const follower = await scripted([
      sse(
        `${put(5, 'k', true)}event: canceled\ndata: {"reason":"compacted: the node installed a snapshot at 8","revision":5}\n\n`,
      ),
      sse(progress(20)),
    ]);
    const leader = await scripted([sse(put(6, 'k', true)), refuse(30)]);
    const kv = new KvClient({ endpoints: [follower.url, leader.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { startRevision: 5, signal: abort.signal }));
    // follower serves 5 and cancels → leader serves 6, then refuses 7 → the follower serves 7 on.
    await watch.until(() => follower.asked.length === 3);
    expect(follower.asked).toEqual(['5', '7', '21']);
    expect(leader.asked).toEqual(['6', '7']);
    expect(watch.seen.map((update) => update.revision)).toEqual([5, 6, 20]);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('without a start revision, a stream lost before the first update reopens without one and yields nothing of it', async () => {
    const server = await scripted([
      sse(put(8, 'k', false)), // a revision cut before its id: the position is still unknown
      (response) => {
        response.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
        response.destroy(); // nothing at all
      },
      sse(`${progress(9)}${put(10, 'k', true)}`),
    ]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { signal: abort.signal }));
    await watch.until(() => server.asked.length === 4);
    expect(server.asked).toEqual([null, null, null, '11']);
    expect(watch.seen.map((update) => [update.revision, update.events.length])).toEqual([
      [9, 0],
      [10, 1],
    ]);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
  });

  it('without a start revision, the start header fixes the position at once: a stream lost before any update resumes there', async () => {
    const run = await watchUntilAsked(3, 'k', {}, [
      sse(put(9, 'k', false), '9'), // cut inside revision 9, before any update
      sse(`${progress(8)}${put(9, 'k', true)}`, '9'),
    ]);
    expect(run).toEqual({ asked: [null, '9', '10'], revisions: [8, 9] });
  });

  it('a start header that is not the revision asked for, or not a revision, drops the stream unread', async () => {
    const answers = ['8', '07', '7'].map((start) => sse(put(8, 'a', true), start));
    const run = await watchUntilAsked(4, '', { prefix: true, startRevision: 7 }, answers);
    expect(run).toEqual({ asked: ['7', '7', '7', '9'], revisions: [8] });
  });

  it('without a start revision, the first update fixes the position every resume starts from', async () => {
    const run = await watchUntilAsked(3, 'k', {}, [sse(progress(4)), sse(put(6, 'k', true))]);
    expect(run).toEqual({ asked: [null, '5', '7'], revisions: [4, 6] });
  });

  /** A stream that breaks the protocol after revision 7 is dropped; the next one (from 8) is whole. */
  async function protocolBreak(broken: string) {
    const server = await scripted([sse(`${put(7, 'a', true)}${broken}`), sse(put(8, 'b', true))]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('', { prefix: true, startRevision: 7, signal: abort.signal }));
    await watch.until(() => server.asked.length === 3);
    abort.abort();
    await watch.running;
    expect(watch.failure).toBeNull();
    return {
      asked: server.asked,
      seen: watch.seen.map((update) => [update.revision, update.events.map((event) => event.key)]),
    };
  }

  it.each([
    ['an event of another revision inside a revision', `${put(8, 'x', false)}${put(9, 'y', true)}`],
    ['a revision going back', put(6, 'x', true)],
    ['the same revision again', put(7, 'x', true)],
    ['a progress going back', progress(5)],
    ['a progress inside a revision', `${put(8, 'x', false)}${progress(8)}`],
    [
      'a cancel inside a revision',
      `${put(8, 'x', false)}event: canceled\ndata: {"reason":"r","revision":9}\n\n`,
    ],
    [
      'an event whose type is not its name',
      'event: delete\nid: 8\ndata: {"type":"put","key":"x","value":"","revision":8}\n\n',
    ],
    ['an event without a key', 'event: put\nid: 8\ndata: {"type":"put","value":"","revision":8}\n\n'],
    [
      'a prev without a value',
      'event: put\nid: 8\ndata: {"type":"put","key":"x","value":"","prev":{},"revision":8}\n\n',
    ],
    [
      'a revision over the bound in events',
      `${put(8, 'x', false).repeat(WATCH_REVISION_EVENTS_MAX)}${put(8, 'y', true)}`,
    ],
  ])('%s is a protocol error: reconnect, never a wrong answer', async (_name, broken) => {
    const { asked, seen } = await protocolBreak(broken);
    expect(asked).toEqual(['7', '8', '9']);
    expect(seen).toEqual([
      [7, ['a']],
      [8, ['b']],
    ]);
  });

  it('a revision of exactly the bound in events is whole', async () => {
    const server = await scripted([
      sse(`${put(8, 'x', false).repeat(WATCH_REVISION_EVENTS_MAX - 1)}${put(8, 'y', true)}`),
    ]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('', { prefix: true, startRevision: 8, signal: abort.signal }));
    await watch.until(() => server.asked.length === 2);
    expect(server.asked).toEqual(['8', '9']);
    expect(watch.seen.map((update) => update.events.length)).toEqual([WATCH_REVISION_EVENTS_MAX]);
    abort.abort();
    await watch.running;
  });

  it('counts silence only while waiting for the node, never while the caller is busy', async () => {
    // Progress every 50 ms, a silence bound of 3 × 100 ms, a loop body that takes 800 ms.
    const server = await scripted([
      (response) => {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.write(progress(1));
        const timer = setInterval(() => response.write(progress(1)), 50);
        response.on('close', () => {
          clearInterval(timer);
        });
      },
    ]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    let updates = 0;
    for await (const update of kv.watch('k', {
      startRevision: 1,
      progressIntervalMs: 100,
      signal: abort.signal,
    })) {
      updates += update.events.length === 0 ? 1 : 0;
      if (updates === 1) await new Promise((resolveWait) => setTimeout(resolveWait, 800));
      if (updates === 3) abort.abort();
    }
    expect(server.asked).toEqual(['1']);
  });

  it('a stream silent for three progress intervals is reopened', async () => {
    const server = await scripted([
      sse(progress(3)),
      (response) => {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.write(progress(4)); // then nothing
      },
    ]);
    const kv = new KvClient({ endpoints: [server.url], retry: FAST_RETRY });
    const abort = new AbortController();
    const watch = collect(kv.watch('k', { startRevision: 1, progressIntervalMs: 100, signal: abort.signal }));
    await watch.until(() => server.asked.length === 3);
    expect(server.asked).toEqual(['1', '4', '5']);
    abort.abort();
    await watch.running;
  });
});

describe('consume (one SSE message of a watch stream)', () => {
  const position = (): Position => ({ next: 8, partial: [], partialBytes: 0, canceled: null });
  const event = (key: string, value: string, id: string | null) => ({
    event: 'put',
    id,
    data: JSON.stringify({ type: 'put', key, value, prev: { value }, revision: 8 }),
  });

  it('bounds the key and value bytes of an unfinished revision (prev values count)', () => {
    const quarter = 'x'.repeat(WATCH_REVISION_BYTES_MAX / 4); // value and prev: half the bound
    const less = quarter.slice(1);
    const at = position();
    expect(consume(event('k', quarter, null), at, 'e')).toBeNull();
    expect(at.partialBytes).toBe(WATCH_REVISION_BYTES_MAX / 2 + 1);
    expect(consume(event('k', less, '8'), at, 'e')).toMatchObject({ revision: 8, events: [{}, {}] });
    expect(at).toMatchObject({ next: 9, partial: [], partialBytes: 0 }); // exactly the bound: whole
    const over = position();
    expect(consume(event('k', quarter, null), over, 'e')).toBeNull();
    expect(() => consume(event('kk', less, '8'), over, 'e')).toThrow(/over 10000 events or 67108864 bytes/);
    expect(over.next).toBe(8); // nothing moved
  });
});

describe('SseParser', () => {
  it('parses fields across chunks, CRLF, comments and multi-line data', () => {
    const parser = new SseParser();
    expect(parser.push('event: progress\r\nid: 4\r\nda')).toEqual([]);
    expect(parser.push('ta: {"revision":\ndata: 4}\r\n\r\n: ping\n\n')).toEqual([
      { event: 'progress', id: '4', data: '{"revision":\n4}' },
    ]);
  });

  it('bounds one event', () => {
    const parser = new SseParser();
    expect(() => parser.push(`data: ${'x'.repeat(5 * 1024 * 1024)}`)).toThrow(KvError);
  });
});

describe('KvClient.watch on a real node (needs the state machine to report changes)', () => {
  it('sees puts and deletes of a prefix, grouped by revision, and resumes from a start revision', async () => {
    const endpoint = await realNode(cleanups);
    const kv = new KvClient({ endpoints: [endpoint] });
    const abort = new AbortController();
    const watch = collect(kv.watch('job/', { prefix: true, signal: abort.signal, prevKv: true }));
    await watch.until(() => watch.seen.length === 1); // where it starts
    const first = await kv.put('job/1', 'a');
    await kv.put('other', 'b');
    const multi = await kv.write({
      SetMulti: {
        pairs: [
          ['job/2', 'c'],
          ['job/1', 'd'],
        ],
      },
    });
    const deleted = await kv.delete('job/2');
    await watch.until(() => watch.revisions().length === 3);
    expect(watch.revisions()).toEqual([first.revision, multi.revision, watch.revisions()[2]]);
    const grouped = watch.seen.find((update) => update.revision === multi.revision);
    expect(
      grouped?.events.map((event) => [event.type, event.key, event.value, event.prev?.value ?? null]),
    ).toEqual([
      ['put', 'job/2', 'c', null],
      ['put', 'job/1', 'd', 'a'],
    ]);
    expect(deleted.deleted).toBe(true);
    expect(watch.seen.at(-1)?.events).toEqual([
      expect.objectContaining({ type: 'delete', key: 'job/2', value: '', version: 0 }),
    ]);
    abort.abort();
    await watch.running;
    const replay = collect(
      kv.watch('job/1', { startRevision: first.revision, signal: AbortSignal.timeout(2_000) }),
    );
    await replay.until(() => replay.revisions().length === 2);
    expect(replay.revisions()).toEqual([first.revision, multi.revision]);
  });
});
