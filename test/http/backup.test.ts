import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { verifyBackupFile } from '../../src/api/backup-file.ts';
import { decodeBackup } from '../../src/api/backup-format.ts';
import { KvClient, KvError } from '../../src/client/index.ts';
import { decodeSnapshotState } from '../../src/node/kv-state-machine.ts';
import { realNode } from '../client/real-node.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function client(url: string): KvClient {
  const kv = new KvClient({ endpoints: [url], timeoutMs: 5_000 });
  stops.push(() => {
    kv.close();
  });
  return kv;
}

describe('GET /backup on a real node', () => {
  it('holds every acknowledged write with its revisions, the leases and the sessions, read after a barrier; the log is not compacted', async () => {
    const url = await realNode(stops);
    const kv = client(url);
    const lease = await kv.lease.grant(60);
    await kv.put('a', '1');
    await kv.put('a', '2');
    await kv.put('leased', 'x', { leaseId: lease.lease_id });
    const last = await kv.put('b', '3');
    const before = await kv.metrics(url);

    const { backup, bytes } = await kv.backup();
    expect(backup.index).toBeGreaterThanOrEqual(last.revision);
    expect(backup.nodeId).toBe(1);
    expect(backup.term).toBe(before.current_term);
    expect(decodeBackup(bytes).backup).toEqual(backup);
    const state = decodeSnapshotState(decodeBackup(bytes).data, backup.index);
    const records = new Map(state.records);
    for (const key of ['a', 'leased', 'b']) {
      const read = await kv.read(key);
      expect(records.get(key), key).toEqual({
        value: read.value,
        createIndex: read.create_index,
        modIndex: read.mod_index,
        version: read.version,
        leaseId: read.lease_id,
      });
    }
    expect(records.get('a')?.version).toBe(2);
    expect(state.leases.map(([id]) => id)).toEqual([lease.lease_id]);
    expect(state.sessions.clients.length).toBe(1); // this client's exactly-once session
    // A backup reads the state machine; it takes no snapshot and compacts nothing.
    expect((await kv.metrics(url)).snapshot).toEqual(before.snapshot);
  });

  it('answers a binary stream with its length, index, term and checksum as headers', async () => {
    const url = await realNode(stops);
    const written = await client(url).put('k', 'v');
    const response = await fetch(`${url}/backup`, { signal: AbortSignal.timeout(10_000) });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/octet-stream');
    const bytes = new Uint8Array(await response.arrayBuffer());
    const { backup } = decodeBackup(bytes);
    expect(Number(response.headers.get('content-length'))).toBe(bytes.length);
    expect(Number(response.headers.get('x-aspen-backup-index'))).toBe(backup.index);
    expect(backup.index).toBeGreaterThanOrEqual(written.revision);
    expect(Number(response.headers.get('x-aspen-backup-term'))).toBe(backup.term);
    expect(response.headers.get('x-aspen-backup-sha256')).toBe(backup.sha256);
    const refused = await fetch(`${url}/backup?full=1`, { signal: AbortSignal.timeout(10_000) });
    expect(refused.status).toBe(400);
  });

  it('saves to a file through FILE.tmp; a failed save leaves neither', async () => {
    const url = await realNode(stops);
    const kv = client(url);
    await kv.put('k', 'v');
    const dir = mkdtempSync(join(tmpdir(), 'aspen-backup-http-'));
    dirs.push(dir);
    const path = join(dir, 'cluster.backup');
    const progress: number[] = [];
    const saved = await kv.saveBackup(path, { onProgress: (received) => progress.push(received) });
    expect(saved).toMatchObject({ path, endpoint: url });
    expect({ ...(await verifyBackupFile(path)), path, endpoint: url }).toEqual(saved);
    expect(progress.at(-1)).toBe(saved.totalBytes);
    expect(readdirSync(dir)).toEqual(['cluster.backup']);

    const down = new KvClient({
      endpoints: ['http://127.0.0.1:9'],
      timeoutMs: 500,
      retry: { attemptsMax: 2, totalMsMax: 1_000 },
    });
    stops.push(() => {
      down.close();
    });
    const failed = join(dir, 'failed.backup');
    await expect(down.saveBackup(failed)).rejects.toBeInstanceOf(KvError);
    expect(existsSync(failed) || existsSync(`${failed}.tmp`)).toBe(false);
  });
});
