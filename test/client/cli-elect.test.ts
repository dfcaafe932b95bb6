import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_LEASE_LOST, EXIT_LOCK_TIMEOUT, EXIT_USAGE } from '../../src/bin/aspen.ts';
import { KvClient } from '../../src/client/index.ts';
import { background } from './aspen-background.ts';
import { realNode } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A short TTL so that loss is seen within a second (the keeper renews every TTL / 3). */
const TTL = ['--ttl', '2'];

const aspen = (args: readonly string[]) => background(args, cleanups);

describe('aspen elect against a real node', () => {
  it('prints when elected, holds until SIGINT, then resigns and exits 0; a second waits, --timeout exits 7', async () => {
    const endpoint = await realNode(cleanups);
    const at = ['--endpoints', endpoint, 'elect', ...TTL];
    const first = aspen([...at, 'db', 'a:1']);
    await first.until(1);
    expect(first.lines()).toEqual([
      expect.stringMatching(/^elected: db = a:1 \(key db\/[0-9a-f]{16}, revision \d+\)$/),
    ]);
    const second = aspen(['--endpoints', endpoint, '--json', 'elect', ...TTL, 'db', 'b:2']);
    const late = aspen([...at, '--timeout', '1', 'db', 'c:3']);
    expect(await late.exited).toBe(EXIT_LOCK_TIMEOUT);
    expect(late.output.stderr).toMatch(/^aspen: CAMPAIGN_TIMEOUT: /);
    expect(second.lines()).toEqual([]);
    const kv = new KvClient({ endpoints: [endpoint] });
    expect(await kv.electionLeader('db')).toMatchObject({ value: 'a:1' });
    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    expect(first.output.stderr).toBe('aspen: resigned from db\n');
    await second.until(1);
    const elected = JSON.parse(second.lines()[0] ?? '') as { value: string; lease_id: number };
    expect(elected).toMatchObject({ name: 'db', value: 'b:2' });
    expect(await kv.electionLeader('db')).toMatchObject({ value: 'b:2', lease_id: elected.lease_id });
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect((await kv.lease.list()).leases).toEqual([]); // both resigned and revoked their leases
    expect(await aspen(['--endpoints', endpoint, 'elect', 'db']).exited).toBe(EXIT_USAGE);
  });

  it('exits 6 when the lease is lost', async () => {
    const endpoint = await realNode(cleanups);
    const run = aspen(['--endpoints', endpoint, '--json', 'elect', ...TTL, 'db', 'a']);
    await run.until(1);
    const held = JSON.parse(run.lines()[0] ?? '') as { lease_id: number };
    await new KvClient({ endpoints: [endpoint] }).lease.revoke(held.lease_id);
    expect(await run.exited).toBe(EXIT_LEASE_LOST);
    expect(run.output.stderr).toMatch(/^aspen: LEASE_LOST: /m);
  });

  it('--observe prints the leader and one line per change until SIGINT', async () => {
    const endpoint = await realNode(cleanups);
    const observer = aspen(['--endpoints', endpoint, 'elect', '--observe', 'db']);
    await observer.until(1);
    const kv = new KvClient({ endpoints: [endpoint] });
    const leader = await kv.campaign('db', 'a:1', { ttlSeconds: 2 });
    await observer.until(2);
    await leader.proclaim('a:2');
    await observer.until(3);
    await leader.resign();
    await observer.until(4);
    observer.child.kill('SIGINT');
    expect(await observer.exited).toBe(0);
    const term = `key ${leader.key}, revision ${leader.revision}`;
    expect(observer.lines()).toEqual([
      'no leader',
      `leader a:1 (${term})`,
      `leader a:2 (${term})`,
      'no leader',
    ]);
    expect(await aspen(['--endpoints', endpoint, 'elect', '--observe', 'db', 'x']).exited).toBe(EXIT_USAGE);
  });
});
