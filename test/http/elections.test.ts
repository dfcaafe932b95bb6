import { afterEach, describe, expect, it } from 'vitest';
import { LOCK_NAME_BYTES_MAX, LOCK_TIMEOUT_MS_MAX, VALUE_BYTES_MAX } from '../../src/base/limits.ts';
import { NodeElectionService } from '../../src/node/election-service.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import type { Answer } from './coordination.ts';
import { hex, pending, post, servedNode, until } from './queue-helpers.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** A real single node (initialized) with the election routes. */
function electionNode() {
  return servedNode(stops, ({ watch, control }) => ({
    elections: new NodeElectionService({ store: control, watch, clock: systemClock }),
  }));
}

async function get(url: string, path: string): Promise<Answer> {
  const response = await fetch(`${url}${path}`);
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

interface SseEvent {
  readonly event: string;
  readonly id: number | null;
  readonly data: Record<string, unknown>;
}

/** An open observe stream: the events read so far (comments skipped), and a way to wait for more. */
async function observe(url: string, name: string) {
  const closing = new AbortController();
  const response = await fetch(`${url}/election/observe?name=${encodeURIComponent(name)}`, {
    signal: closing.signal,
  });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const events: SseEvent[] = [];
  const body = response.body;
  if (body === null) throw new Error('no stream body');
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  const reading = (async () => {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) return;
      text += chunk.value;
      for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
        const lines = text.slice(0, end).split('\n');
        text = text.slice(end + 2);
        const field = (name: string) =>
          lines.find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2);
        const event = field('event');
        if (event === undefined) continue;
        const id = field('id');
        events.push({
          event,
          id: id === undefined ? null : Number(id),
          data: JSON.parse(field('data') ?? 'null') as Record<string, unknown>,
        });
      }
    }
  })().catch(() => undefined);
  stops.push(() => {
    closing.abort();
    return reading;
  });
  const leaders = () => events.filter((event) => event.event !== 'progress');
  return {
    events,
    leaders,
    seen: (count: number) => until(`${count} events`, () => leaders().length >= count),
  };
}

describe('elections on one node', () => {
  it('the second candidate leads when the first resigns; observe sees each leader and value in order', async () => {
    const { url, grant, keys } = await electionNode();
    const [a, b] = [await grant(), await grant()];
    const none = await get(url, '/election/leader?name=e');
    expect(none.status).toBe(404);
    expect(none.json).toMatchObject({ error: { code: 'NOT_FOUND' } });
    const stream = await observe(url, 'e');
    await stream.seen(1);
    const first = await post(url, '/election/campaign', { name: 'e', lease_id: a, value: 'alpha' });
    expect(first).toEqual({
      status: 200,
      json: { name: 'e', key: `e/${hex(a)}`, revision: expect.any(Number) as number, value: 'alpha' },
    });
    const leader = await get(url, '/election/leader?name=e');
    expect(leader.json).toEqual({
      name: 'e',
      key: `e/${hex(a)}`,
      value: 'alpha',
      revision: first.json.revision,
      lease_id: a,
    });
    const second = pending(post(url, '/election/campaign', { name: 'e', lease_id: b, value: 'beta' }));
    await until('the second candidate key', async () => (await keys('e/')).length === 2);
    expect(second.done).toBe(false);
    // A candidate may not proclaim; the leader may.
    const refused = await post(url, '/election/proclaim', { key: `e/${hex(b)}`, value: 'usurp' });
    expect(refused.status).toBe(409);
    expect(refused.json).toMatchObject({ error: { code: 'NOT_ELECTED' } });
    const proclaimed = await post(url, '/election/proclaim', { key: `e/${hex(a)}`, value: 'alpha-2' });
    expect(proclaimed.json).toEqual({ ...first.json, value: 'alpha-2' });
    expect((await post(url, '/election/resign', { key: `e/${hex(a)}` })).json).toEqual({ resigned: true });
    const won = await second.answer;
    expect(won.status).toBe(200);
    expect(won.json).toMatchObject({ key: `e/${hex(b)}`, value: 'beta' });
    expect(won.json.revision as number).toBeGreaterThan(first.json.revision as number);
    expect((await post(url, '/election/resign', { key: `e/${hex(b)}` })).status).toBe(200);
    await stream.seen(5);
    expect(stream.leaders().map((event) => [event.event, event.data.key, event.data.value])).toEqual([
      ['no_leader', undefined, undefined],
      ['leader', `e/${hex(a)}`, 'alpha'],
      ['leader', `e/${hex(a)}`, 'alpha-2'],
      ['leader', `e/${hex(b)}`, 'beta'],
      ['no_leader', undefined, undefined],
    ]);
    const ids = stream.leaders().map((event) => event.id ?? 0);
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    // Resigning again, or proclaiming on a resigned key: not found.
    const again = await post(url, '/election/resign', { key: `e/${hex(a)}` });
    expect([again.status, again.json.error]).toMatchObject([404, { code: 'NOT_FOUND' }]);
    const late = await post(url, '/election/proclaim', { key: `e/${hex(a)}`, value: 'x' });
    expect([late.status, late.json.error]).toMatchObject([404, { code: 'NOT_FOUND' }]);
  });

  it('the second candidate leads when the leader lease is revoked; observe starts at the current leader', async () => {
    const { url, grant, leases } = await electionNode();
    const [a, b] = [await grant(), await grant()];
    const first = await post(url, '/election/campaign', { name: 'r', lease_id: a, value: 'one' });
    const stream = await observe(url, 'r');
    await stream.seen(1);
    const second = pending(post(url, '/election/campaign', { name: 'r', lease_id: b, value: 'two' }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(second.done).toBe(false);
    await leases.revoke({ lease_id: a });
    const won = await second.answer;
    expect(won.json).toMatchObject({ key: `r/${hex(b)}`, value: 'two' });
    expect(won.json.revision as number).toBeGreaterThan(first.json.revision as number);
    await stream.seen(2);
    expect(stream.leaders().map((event) => [event.event, event.data])).toEqual([
      ['leader', { name: 'r', key: `r/${hex(a)}`, value: 'one', revision: first.json.revision, lease_id: a }],
      ['leader', { name: 'r', key: `r/${hex(b)}`, value: 'two', revision: won.json.revision, lease_id: b }],
    ]);
  });

  it('a timed-out campaign answers 409 CAMPAIGN_TIMEOUT and removes its key', async () => {
    const { url, grant, keys } = await electionNode();
    const [a, b] = [await grant(), await grant()];
    expect((await post(url, '/election/campaign', { name: 't', lease_id: a, value: '' })).status).toBe(200);
    const timedOut = await post(url, '/election/campaign', {
      name: 't',
      lease_id: b,
      value: 'v',
      timeout_ms: 200,
    });
    expect(timedOut.status).toBe(409);
    expect(timedOut.json).toMatchObject({ error: { code: 'CAMPAIGN_TIMEOUT', definite: true } });
    expect(await keys('t/')).toEqual([`t/${hex(a)}`]);
  });

  it('a campaign again with the same lease keeps the key and term and proclaims the new value', async () => {
    const { url, grant } = await electionNode();
    const a = await grant();
    const first = await post(url, '/election/campaign', { name: 'c', lease_id: a, value: 'old' });
    const again = await post(url, '/election/campaign', { name: 'c', lease_id: a, value: 'new' });
    expect(again.json).toEqual({ ...first.json, value: 'new' });
    expect((await get(url, '/election/leader?name=c')).json).toMatchObject({ value: 'new' });
  });

  it('refuses an unknown lease with 404 LEASE_NOT_FOUND and bad input with 400, writing nothing', async () => {
    const { url, control, grant, keys } = await electionNode();
    const lease = await grant();
    const unknown = await post(url, '/election/campaign', { name: 'u', lease_id: 999, value: '' });
    expect([unknown.status, unknown.json.error]).toMatchObject([404, { code: 'LEASE_NOT_FOUND' }]);
    expect(await keys('u/')).toEqual([]);
    const before = (await control.getMetrics()).last_applied;
    const campaign = (body: Record<string, unknown>) => [
      '/election/campaign',
      { name: 'a', lease_id: lease, value: '', ...body },
    ];
    const bad: unknown[][] = [
      campaign({ name: '' }),
      campaign({ name: 'x'.repeat(LOCK_NAME_BYTES_MAX + 1) }),
      campaign({ name: 'a/b' }),
      campaign({ lease_id: 0 }),
      campaign({ lease_id: '1' }),
      campaign({ value: 1 }),
      campaign({ value: 'v'.repeat(VALUE_BYTES_MAX + 1) }),
      campaign({ timeout_ms: 0 }),
      campaign({ timeout_ms: LOCK_TIMEOUT_MS_MAX + 1 }),
      campaign({ extra: true }),
      ['/election/campaign', { name: 'a', lease_id: lease }],
      ['/election/proclaim', { key: 'plain', value: '' }],
      ['/election/proclaim', { key: `a/${hex(lease)}` }],
      ['/election/proclaim', { key: `a/${hex(lease)}`, value: null }],
      ['/election/resign', { key: 'a/123' }],
      ['/election/resign', { key: `a/b/${hex(lease)}` }],
      ['/election/resign', {}],
      ['/election/leader?name=a/b'],
      ['/election/leader?name='],
      ['/election/leader'],
      ['/election/leader?name=a&x=1'],
      ['/election/observe?name=a/b'],
      ['/election/observe'],
    ];
    for (const [path, body] of bad) {
      const answer =
        body === undefined ? await get(url, path as string) : await post(url, path as string, body);
      expect({ path, body, status: answer.status }).toEqual({ path, body, status: 400 });
      expect(answer.json).toMatchObject({
        error: { code: expect.stringMatching(/^(INVALID_INPUT|VALUE_TOO_LARGE)$/) as string },
      });
    }
    expect((await control.getMetrics()).last_applied).toBe(before);
  });
});
