import { once } from 'node:events';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/api/types.ts';
import { KEY_BYTES_MAX } from '../../src/base/limits.ts';
import type { ConnectionLimits } from '../../src/http/connections.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { revisionFrame, SSE_BATCH_CHARS_MAX } from '../../src/http/watch-route.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { WatchHub, type WatchBounds } from '../../src/node/watch-hub.ts';
import { unusedController, unusedStore } from '../support/unused-services.ts';
import { outcome, put } from '../support/watch-changes.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** Bound on waiting for stream text in these tests. */
const WAIT_MS_MAX = 5_000;

function server(
  appliedIndex = 0,
  bounds: Partial<WatchBounds> = {},
  connectionLimits?: ConnectionLimits,
  watchHeartbeatMs?: number,
) {
  const hub = new WatchHub({ clock: systemClock, appliedIndex, bounds });
  const app = buildHttpServer({
    controller: unusedController,
    store: unusedStore,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    watch: hub,
    ...(connectionLimits === undefined ? {} : { connectionLimits }),
    ...(watchHeartbeatMs === undefined ? {} : { watchHeartbeatMs }),
  });
  stops.push(() => {
    // undici keeps an answered connection open for 4 s; the test need not wait for it
    const closing = app.close();
    app.server.closeAllConnections();
    return closing;
  });
  return { hub, app };
}

async function listening(...args: Parameters<typeof server>) {
  const built = server(...args);
  await built.app.listen({ host: '127.0.0.1', port: 0 });
  const address = built.app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return { ...built, url: `http://127.0.0.1:${address.port}` };
}

/** An open SSE response read as text, as it arrives. */
class Stream {
  text = '';
  ended = false;
  private readonly controller = new AbortController();

  static async open(
    url: string,
    headers: Record<string, string> = {},
  ): Promise<{ stream: Stream; response: Response }> {
    const stream = new Stream();
    const response = await fetch(url, { headers, signal: stream.controller.signal });
    if (response.ok) void stream.pump(response);
    stops.push(() => {
      stream.close();
    });
    return { stream, response };
  }

  private async pump(response: Response): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>)
        this.text += decoder.decode(chunk, { stream: true });
    } catch {
      // aborted by the test
    }
    this.ended = true;
  }

  async until(check: (stream: Stream) => boolean): Promise<void> {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (!check(this)) {
      if (Date.now() > deadline) throw new Error(`timed out; stream so far:\n${this.text}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  close(): void {
    this.controller.abort();
  }
}

/** Wait (bounded) until the hub has no watcher. */
async function noWatchers(hub: WatchHub): Promise<void> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while (hub.watcherCount > 0 && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 5));
  expect(hub.watcherCount).toBe(0);
}

const ids = (text: string) => [...text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]));

describe('GET /watch (Server-Sent Events)', () => {
  it('streams each revision in one piece, with the id on its last event only', async () => {
    const { hub, url } = await listening();
    const { stream, response } = await Stream.open(`${url}/watch?prefix=a&progress_interval_ms=0`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(response.headers.get('x-aspen-watch-start')).toBe('1'); // applied 0: every change from 1
    await stream.until((s) => s.text.includes('event: progress'));
    hub.applied(1, outcome(1, [put('a/1', 'x', 1), put('b', 'y', 1)]));
    hub.applied(2, outcome(2, [put('a/2', 'p', 2), put('a/3', 'q', 2)]));
    await stream.until((s) => ids(s.text).length === 3);
    const event = (key: string, value: string, revision: number) =>
      JSON.stringify({
        type: 'put',
        key,
        value,
        create_index: revision,
        mod_index: revision,
        version: 1,
        lease_id: 0,
        revision,
      });
    expect(stream.text).toBe(
      `event: progress\nid: 0\ndata: {"revision":0}\n\n` +
        `event: put\nid: 1\ndata: ${event('a/1', 'x', 1)}\n\n` +
        `event: put\ndata: ${event('a/2', 'p', 2)}\n\n` +
        `event: put\nid: 2\ndata: ${event('a/3', 'q', 2)}\n\n`,
    );
  });

  it('revisions heard in one turn go out together, in order, also past the batch bound', async () => {
    const { hub, url } = await listening();
    const streams = await Promise.all(
      [0, 1].map(() => Stream.open(`${url}/watch?prefix=a&progress_interval_ms=0`)),
    );
    for (const { stream } of streams) await stream.until((s) => s.text.includes('event: progress'));
    const value = 'v'.repeat(1_000);
    const revisions = Math.ceil((3 * SSE_BATCH_CHARS_MAX) / value.length);
    for (let index = 1; index <= revisions; index += 1)
      hub.applied(index, outcome(index, [put(`a/${index}`, value, index), put('b', 'x', index)]));
    const expected = Array.from({ length: revisions }, (_, index) => index + 1);
    for (const { stream } of streams) {
      await stream.until((s) => ids(s.text).length === revisions + 1);
      expect(ids(stream.text)).toEqual([0, ...expected]);
      expect(stream.text).not.toContain('"key":"b"');
    }
    expect(streams[1]?.stream.text).toBe(streams[0]?.stream.text);
  });

  it('a revision’s frame has the id on its last event only, and is built of that revision’s events', () => {
    const event = (key: string, revision: number): WatchEvent => ({
      type: 'put',
      key,
      value: '',
      create_index: revision,
      mod_index: revision,
      version: 1,
      lease_id: 0,
      revision,
    });
    const events = [event('a', 7), event('b', 7)];
    const frame = revisionFrame(7, events);
    expect(frame.match(/^id: /gm)).toHaveLength(1);
    expect(frame.endsWith(`id: 7\ndata: ${JSON.stringify(events[1])}\n\n`)).toBe(true);
    expect(revisionFrame(7, events)).toBe(frame);
    expect(() => revisionFrame(8, [event('a', 7)])).toThrow(/events are of the revision/);
  });

  it('resumes after Last-Event-ID, which wins over start_revision, and sends prev with prev_kv', async () => {
    const { hub, url } = await listening();
    for (let index = 1; index <= 3; index += 1)
      hub.applied(index, outcome(index, [put('k', `v${index}`, index)]));
    const { stream, response } = await Stream.open(`${url}/watch?key=k&start_revision=1&prev_kv=true`, {
      'last-event-id': '1',
    });
    expect(response.headers.get('x-aspen-watch-start')).toBe('2');
    await stream.until((s) => ids(s.text).includes(3));
    expect(ids(stream.text)).toEqual([2, 3]);
    expect(stream.text).toContain('"prev":null');
  });

  it('sends progress with its id, and ends with canceled when a snapshot skips the watcher', async () => {
    const { hub, url } = await listening(4);
    const { stream } = await Stream.open(`${url}/watch?prefix=&progress_interval_ms=100`);
    await stream.until((s) => s.text.includes('event: progress'));
    expect(stream.text).toMatch(/^event: progress\nid: 4\ndata: \{"revision":4\}\n\n/);
    hub.restored(9);
    await stream.until((s) => s.ended);
    expect(stream.text).toMatch(
      /event: canceled\ndata: \{"reason":"compacted: the node installed a snapshot at 9","revision":4\}\n\n$/,
    );
    expect(hub.watcherCount).toBe(0);
  });

  it('410 COMPACTED with compact_revision before the history, as a JSON error', async () => {
    const { app } = server(10);
    const response = await app.inject({ method: 'GET', url: '/watch?key=k&start_revision=5' });
    expect(response.statusCode).toBe(410);
    expect(response.json()).toMatchObject({ error: { code: 'COMPACTED', compact_revision: 11 } });
  });

  it('refuses bad input with 400 before any stream', async () => {
    const { app, hub } = server();
    const bad: [string, Record<string, string>?, string?][] = [
      ['/watch'],
      ['/watch?key=a&prefix=a'],
      ['/watch?key='],
      ['/watch?key=a&start_revision=0'],
      ['/watch?key=a&start_revision=01'],
      ['/watch?key=a&start_revision=-1'],
      ['/watch?key=a&start_revision=abc'],
      ['/watch?key=a&start_revision=99999999999999999'],
      ['/watch?key=a&prev_kv=yes'],
      ['/watch?key=a&progress_interval_ms=50'],
      ['/watch?key=a&progress_interval_ms=1.5'],
      ['/watch?key=a&key=b'],
      ['/watch?key=a&limit=3'],
      ['/watch?key=%FF'],
      ['/watch?key=a', { 'last-event-id': 'x' }],
      ['/watch?key=a', { 'last-event-id': '-1' }],
      [`/watch?key=${'k'.repeat(KEY_BYTES_MAX + 1)}`, {}, 'KEY_TOO_LARGE'],
    ];
    for (const [url, headers, code] of bad) {
      const response = await app.inject({ method: 'GET', url, headers: headers ?? {} });
      expect(response.statusCode, url).toBe(400);
      expect(response.json(), url).toMatchObject({ error: { code: code ?? 'INVALID_INPUT' } });
    }
    expect(hub.watcherCount).toBe(0);
  });

  it('503 TOO_MANY_WATCHERS past the bound; a client that leaves frees its place', async () => {
    const { hub, url } = await listening(0, { watchersMax: 1 });
    const first = await Stream.open(`${url}/watch?prefix=`);
    expect(first.response.status).toBe(200);
    const second = await fetch(`${url}/watch?prefix=`);
    expect(second.status).toBe(503);
    expect(await second.json()).toMatchObject({ error: { code: 'TOO_MANY_WATCHERS' } });
    first.stream.close();
    await noWatchers(hub);
  });

  it('a quiet stream hears a comment line every heartbeat, whatever its progress interval', async () => {
    const { hub, url } = await listening(0, {}, undefined, 50);
    const { stream } = await Stream.open(`${url}/watch?prefix=&progress_interval_ms=0`);
    await stream.until((s) => s.text.split('\n').filter((line) => line === ':').length >= 3);
    // comment lines only between events: every event still parses whole
    hub.applied(1, outcome(1, [put('k', 'v', 1)]));
    await stream.until((s) => ids(s.text).includes(1));
    expect(stream.text).toMatch(/^event: progress\nid: 0\ndata: \{"revision":0\}\n\n(:\n)+/);
    expect(stream.text).toMatch(/\n\n(:\n)*event: put\nid: 1\ndata: \{[^\n]*\}\n\n(:\n)*$/);
  });

  it('a client whose socket is destroyed leaves no watcher behind', async () => {
    const { hub, url } = await listening();
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    socket.write('GET /watch?prefix=&progress_interval_ms=0 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    const deadline = Date.now() + WAIT_MS_MAX;
    while (!answer.includes('event: progress') && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 5));
    expect(answer).toMatch(/^HTTP\/1.1 200/);
    expect(hub.watcherCount).toBe(1);
    socket.destroy();
    await noWatchers(hub);
  });

  it('a client gone before the watcher opens leaves no watcher behind', async () => {
    const { hub, app } = server();
    // The request waits in a hook until its client has left: the route then opens a watcher for nobody.
    app.addHook('preHandler', async (request, reply) => {
      request.raw.socket.destroy();
      if (!reply.raw.closed) await once(reply.raw, 'close');
    });
    let opened = 0;
    const open = hub.open.bind(hub);
    hub.open = (watchRequest, sink) => {
      opened += 1;
      return open(watchRequest, sink);
    };
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    if (typeof address !== 'object' || address === null) throw new Error('no address');
    await expect(fetch(`http://127.0.0.1:${address.port}/watch?prefix=`)).rejects.toThrow();
    const deadline = Date.now() + WAIT_MS_MAX;
    while (opened === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(opened).toBe(1);
    expect(hub.watcherCount).toBe(0);
  });

  it('a quiet stream is not closed as idle, and a server stop ends it at once', async () => {
    const { hub, app, url } = await listening(
      0,
      {},
      { connectionsMax: 8, perAddressMax: 8, idleTimeoutMs: 100 },
    );
    const { stream } = await Stream.open(`${url}/watch?prefix=&progress_interval_ms=0`);
    await new Promise((resolve) => setTimeout(resolve, 400));
    hub.applied(1, outcome(1, [put('k', 'v', 1)]));
    await stream.until((s) => ids(s.text).includes(1));
    expect(stream.ended).toBe(false);
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    await stream.until((s) => s.ended);
    expect(hub.watcherCount).toBe(0);
  });
});
