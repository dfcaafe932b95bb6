import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE } from '../../src/bin/aspen.ts';
import { KvClient } from '../../src/client/index.ts';
import { background } from './aspen-background.ts';
import { realNode } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const watching = (args: readonly string[]) => background(args, cleanups);

describe('aspen watch', () => {
  it('prints one line per event (JSON lines with --json) and exits 0 on SIGINT', async () => {
    const endpoint = await realNode(cleanups);
    const kv = new KvClient({ endpoints: [endpoint] });
    const start = (await kv.put('app/first', '0')).revision + 1;
    const plain = watching(['--endpoints', endpoint, 'watch', '--prefix', 'app/', '--rev', String(start)]);
    const json = watching(['--endpoints', endpoint, '--json', 'watch', 'app/x', '--rev', String(start)]);
    const put = await kv.put('app/x', 'hello world');
    await kv.put('other', 'not watched');
    const deleted = await kv.delete('app/x');
    expect(deleted.deleted).toBe(true);
    await plain.until(2);
    await json.until(2);
    expect(plain.lines()).toEqual([
      `${put.revision} PUT app/x hello world`,
      expect.stringMatching(/^\d+ DELETE app\/x$/),
    ]);
    expect(json.lines().map((line) => JSON.parse(line) as unknown)).toEqual([
      expect.objectContaining({ type: 'put', key: 'app/x', value: 'hello world', revision: put.revision }),
      expect.objectContaining({ type: 'delete', key: 'app/x', value: '' }),
    ]);
    plain.child.kill('SIGINT');
    json.child.kill('SIGINT');
    expect(await plain.exited).toBe(EXIT_OK);
    expect(await json.exited).toBe(EXIT_OK);
    expect(plain.output.stderr).toBe('');
  });

  it('a bad --rev is a usage error; COMPACTED (once every endpoint refused) exits 1 with the code on stderr', async () => {
    const usage = watching(['--endpoints', 'http://127.0.0.1:1', 'watch', 'k', '--rev', '0']);
    expect(await usage.exited).toBe(EXIT_USAGE);
    expect(usage.output.stderr).toMatch(/^aspen: USAGE: --rev must be a positive integer/);
    // Two nodes that both lost revision 3 (compact revisions 9 and 12): COMPACTED only once both refused.
    const refusing = async (compactRevision: number) => {
      const server = http.createServer((_request, response) => {
        response.writeHead(410, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            error: {
              code: 'COMPACTED',
              message: 'revision 3 is older than the history',
              compact_revision: compactRevision,
            },
          }),
        );
      });
      await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
      cleanups.push(
        () =>
          new Promise<void>((resolveClose) =>
            server.close(() => {
              resolveClose();
            }),
          ),
      );
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    const endpoints = `${await refusing(9)},${await refusing(12)}`;
    const compacted = watching(['--endpoints', endpoints, 'watch', 'k', '--rev', '3']);
    expect(await compacted.exited).toBe(EXIT_FAILED);
    expect(compacted.output.stderr).toBe(
      'aspen: COMPACTED: revision 3 is older than the history (refused by every endpoint: 2; the oldest revision one serves is 12)\n',
    );
  });
});
