import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
/** How long a waiter is watched to see that it has not run its command. */
const STILL_WAITING_MS = 500;

const aspen = (args: readonly string[]) => background(args, cleanups);
const sh = (script: string): string[] => ['--', 'sh', '-c', script];

function gateFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'aspen-lock-'));
  cleanups.push(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return join(dir, 'gate');
}

describe('aspen lock against a real node', () => {
  it('runs the command with the key and token in its environment, exits with its code, releases the lock', async () => {
    const endpoint = await realNode(cleanups);
    const run = aspen([
      '--endpoints',
      endpoint,
      'lock',
      ...TTL,
      'jobs',
      ...sh('echo "$ASPEN_LOCK_KEY $ASPEN_FENCING_TOKEN"; exit 3'),
    ]);
    expect(await run.exited).toBe(3);
    expect(run.lines()).toEqual([expect.stringMatching(/^jobs\/[0-9a-f]{16} \d+$/)]);
    expect(run.output.stderr).toMatch(
      /^aspen: lock jobs held \(key jobs\/[0-9a-f]{16}, fencing token \d+\)\n$/,
    );
    const killed = aspen(['--endpoints', endpoint, 'lock', 'jobs', ...sh('kill -TERM $$')]);
    expect(await killed.exited).toBe(128 + 15);
    const kv = new KvClient({ endpoints: [endpoint] });
    expect((await kv.lease.list()).leases).toEqual([]); // both released: their leases revoked
    expect(await aspen(['--endpoints', endpoint, 'lock', 'jobs']).exited).toBe(EXIT_USAGE);
  });

  it('a second aspen lock waits until the first command exits, then runs with a larger token; --timeout exits 7', async () => {
    const endpoint = await realNode(cleanups);
    const gate = gateFile();
    const at = ['--endpoints', endpoint, 'lock', ...TTL, 'jobs'];
    const first = aspen([
      ...at,
      ...sh(`echo "first $ASPEN_FENCING_TOKEN"; while [ ! -e ${gate} ]; do sleep 0.05; done`),
    ]);
    await first.until(1);
    const second = aspen([...at, ...sh('echo "second $ASPEN_FENCING_TOKEN"')]);
    const late = aspen(['--endpoints', endpoint, 'lock', '--timeout', '1', 'jobs', ...sh('echo late')]);
    expect(await late.exited).toBe(EXIT_LOCK_TIMEOUT);
    expect(late.output.stderr).toMatch(/^aspen: LOCK_TIMEOUT: /);
    await new Promise((resolve) => setTimeout(resolve, STILL_WAITING_MS));
    expect(second.lines()).toEqual([]);
    writeFileSync(gate, '');
    expect(await first.exited).toBe(0);
    expect(await second.exited).toBe(0);
    const token = (line: string | undefined) => Number(line?.split(' ')[1]);
    expect(token(second.lines()[0])).toBeGreaterThan(token(first.lines()[0]));
  });

  it('on lease loss the command gets SIGTERM and aspen exits 6', async () => {
    const endpoint = await realNode(cleanups);
    const marker = gateFile();
    const script = `trap 'echo terminated > ${marker}; exit 143' TERM; sleep 30 & wait`;
    const run = aspen(['--endpoints', endpoint, '--json', 'lock', ...TTL, 'jobs', ...sh(script)]);
    await run.until(1);
    const held = JSON.parse(run.lines()[0] ?? '') as { lease_id: number; fencing_token: number };
    await new KvClient({ endpoints: [endpoint] }).lease.revoke(held.lease_id);
    expect(await run.exited).toBe(EXIT_LEASE_LOST);
    expect(existsSync(marker)).toBe(true);
    expect(run.output.stderr).toMatch(/lease of lock jobs lost: sending SIGTERM/);
  });
});
