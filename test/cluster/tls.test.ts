import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/client/index.ts';
import { certificateProblem } from '../../src/cluster/http-tls.ts';
import { listenLoopback } from '../support/loopback-server.ts';
import { makeTestCertificates, type TestCertificates } from '../support/tls.ts';
import { eventually, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * Issue 18's TLS on real aspen-node processes: the HTTP API over https with --http-tls-cert and
 * --http-tls-key, KvClient's `ca` and the CLI's --cacert (calls and streams), a certificate from
 * another CA refused at once with TLS_ERROR, SIGHUP reading a new certificate, and bad TLS
 * configuration refused in one line.
 */
const NODE_BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
const ASPEN_CLI = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const EXIT_CONFIG = 2;
/**
 * A refused certificate fails at the first attempt. The refused clients back off a full second
 * between attempts (SLOW_RETRY): were TLS_ERROR retried, seven backoffs would take this long with
 * a probability under 1%.
 */
const REFUSAL_MS_MAX = 1_500;
const SLOW_RETRY = { attemptsMax: 8, totalMsMax: 20_000, backoffMsMin: 1_000, backoffMsMax: 1_000 };
/** The CLI's refusal, process start (about a second here) included; its default budget is 10 s. */
const CLI_REFUSAL_MS_MAX = 6_000;
const PROCESS_TIMEOUT_MS = 30_000;

const cluster = new ProcessCluster();
let certs: TestCertificates;
let node: NodeProcess;
/** The files the node was started with (replaced before the SIGHUP test). */
let nodeCert: string;
let nodeKey: string;
const clients: KvClient[] = [];

beforeAll(async () => {
  certs = makeTestCertificates(cluster.tempDir());
  nodeCert = join(certs.dir, 'node.crt');
  nodeKey = join(certs.dir, 'node.key');
  copyFileSync(certs.serverCert, nodeCert);
  copyFileSync(certs.serverKey, nodeKey);
  node = await cluster.start(1, { tls: { cert: nodeCert, key: nodeKey } });
  const kv = client(certs.caCert);
  await kv.init([cluster.member(node)]);
  await eventually(async () => (await kv.leader()) === 1, 10_000);
}, 60_000);

afterAll(() => {
  for (const kv of clients) kv.close();
  cluster.cleanup();
});

function client(caFile: string | null, endpoint = node.http): KvClient {
  const kv = new KvClient({
    endpoints: [endpoint],
    timeoutMs: 5_000,
    retry: SLOW_RETRY,
    ...(caFile === null ? {} : { ca: certs.pem(caFile) }),
  });
  clients.push(kv);
  return kv;
}

function aspen(args: readonly string[], env: Record<string, string> = {}) {
  const startedMs = Date.now();
  const run = spawnSync(process.execPath, [ASPEN_CLI, '--endpoints', node.http, ...args], {
    encoding: 'utf8',
    timeout: PROCESS_TIMEOUT_MS,
    env: { ...process.env, ...env },
  });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr, ms: Date.now() - startedMs };
}

function aspenNode(args: readonly string[], env: Record<string, string> = {}) {
  const run = spawnSync(
    process.execPath,
    [NODE_BIN, '--node-id', '9', '--storage', 'memory', '--http-addr', '127.0.0.1:0', ...args],
    { encoding: 'utf8', timeout: PROCESS_TIMEOUT_MS, env: { ...process.env, ...env } },
  );
  return { code: run.status, lines: run.stderr.trim().split('\n') };
}

/** The KvError a promise rejects with, and how long it took. */
async function refusal(work: () => Promise<unknown>): Promise<{ error: KvError; ms: number }> {
  const startedMs = Date.now();
  try {
    await work();
  } catch (error) {
    if (!(error instanceof KvError)) throw error;
    return { error, ms: Date.now() - startedMs };
  }
  throw new Error('expected a refusal');
}

describe('TLS on the HTTP API of a real node', () => {
  it('serves https: KvClient with the CA writes, reads, watches and observes; the node says https', async () => {
    expect(node.http).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(node.log.some((line) => line.includes(`http ${node.http},`))).toBe(true);
    const kv = client(certs.caCert);
    const written = await kv.put('tls/a', '1');
    expect((await kv.get('tls/a'))?.value).toBe('1');
    const fromBytes = new KvClient({
      endpoints: [node.http],
      ca: new Uint8Array(readFileSync(certs.caCert)),
    });
    clients.push(fromBytes);
    expect((await fromBytes.get('tls/a'))?.value).toBe('1');
    expect(() => new KvClient({ endpoints: [node.http], ca: 'not a certificate' })).toThrow(
      /ca: no PEM certificate/,
    );

    const abort = new AbortController();
    const seen: string[] = [];
    for await (const update of kv.watch('tls/', {
      prefix: true,
      startRevision: written.revision,
      signal: abort.signal,
    })) {
      seen.push(...update.events.map((event) => `${event.type} ${event.key} ${event.value}`));
      if (seen.length === 1) await kv.put('tls/b', '2'); // sent while the https stream is open
      if (seen.length === 2) abort.abort();
    }
    expect(seen).toEqual(['put tls/a 1', 'put tls/b 2']);

    const leadership = await kv.campaign('tls-election', 'me', { ttlSeconds: 5 });
    for await (const change of kv.observe('tls-election')) {
      expect(change.leader?.value).toBe('me');
      break;
    }
    await leadership.resign();
  }, 60_000);

  it('the CLI takes --cacert or ASPEN_CACERT, for every command', () => {
    const put = aspen(['--cacert', certs.caCert, 'put', 'tls/cli', 'v']);
    expect([put.code, put.stderr]).toEqual([0, '']);
    const get = aspen(['get', 'tls/cli'], { ASPEN_CACERT: certs.caCert });
    expect([get.code, get.stdout]).toEqual([0, 'v\n']);
    const lock = aspen(['--cacert', certs.caCert, 'lock', '--ttl', '5', 'tls-lock', '--', 'true']);
    expect([lock.code, lock.stderr]).toMatchObject([
      0,
      expect.stringMatching(/lock tls-lock held/) as string,
    ]);
    const missing = aspen(['--cacert', join(certs.dir, 'none.crt'), 'get', 'tls/cli']);
    expect([missing.code, missing.stderr]).toEqual([
      2,
      expect.stringMatching(/^aspen: USAGE: cannot read --cacert .*\n$/) as string,
    ]);
    const notPem = aspen(['--cacert', nodeKey, 'get', 'tls/cli']);
    expect([notPem.code, notPem.stderr]).toEqual([
      2,
      expect.stringMatching(/^aspen: USAGE: --cacert .*no PEM certificate/) as string,
    ]);
  }, 60_000);

  it('a certificate no given CA signed is refused at once with TLS_ERROR, by calls, streams and the CLI', async () => {
    for (const caFile of [certs.otherCaCert, null]) {
      const kv = client(caFile);
      const call = await refusal(() => kv.get('tls/a'));
      expect(call.error).toMatchObject({ code: 'TLS_ERROR', definite: true, endpoint: node.http });
      expect(call.error.message).toMatch(/certificate is not trusted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
      expect(call.ms).toBeLessThan(REFUSAL_MS_MAX);
      const write = await refusal(() => kv.put('tls/refused', 'x'));
      expect([write.error.code, write.error.definite]).toEqual(['TLS_ERROR', true]);
      const stream = await refusal(() => kv.watch('tls/a')[Symbol.asyncIterator]().next());
      expect(stream.error.code).toBe('TLS_ERROR');
      expect(stream.ms).toBeLessThan(REFUSAL_MS_MAX);
    }
    expect(await client(certs.caCert).get('tls/refused')).toBeNull();
    const cli = aspen(['--cacert', certs.otherCaCert, 'get', 'tls/a']);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(
      /^aspen: TLS_ERROR: https:\/\/127\.0\.0\.1:\d+: the node's certificate is not trusted .*--cacert.*\n$/,
    );
    expect(cli.ms).toBeLessThan(CLI_REFUSAL_MS_MAX);
  }, 60_000);

  it('plain HTTP to the TLS port just fails, and https to a plain port is a TLS_ERROR; the node serves on', async () => {
    const port = new URL(node.http).port;
    const plain = new KvClient({
      endpoints: [`http://127.0.0.1:${port}`],
      retry: { attemptsMax: 2, backoffMsMin: 1, backoffMsMax: 5 },
    });
    clients.push(plain);
    expect((await refusal(() => plain.state())).error.code).toBe('CONNECTION');
    await expect(
      fetch(`http://127.0.0.1:${port}/state`, { signal: AbortSignal.timeout(5_000) }),
    ).rejects.toThrow();
    expect((await client(certs.caCert).state()).members).toEqual([1]);
    const plainServer = createServer((_request, response) => response.end('{}'));
    const cleanups: (() => Promise<void> | void)[] = [];
    const plainUrl = await listenLoopback(plainServer, cleanups);
    try {
      const wrongScheme = client(certs.caCert, plainUrl.replace('http:', 'https:'));
      const refused = await refusal(() => wrongScheme.state());
      expect([refused.error.code, refused.error.definite]).toEqual(['TLS_ERROR', true]);
      expect(refused.error.message).toMatch(/TLS handshake failed \(EPROTO: wrong version number\)/);
    } finally {
      for (const cleanup of cleanups) await cleanup();
    }
  }, 60_000);

  it('SIGHUP reads the certificate again: new connections get the new one; a broken file keeps the old', async () => {
    writeFileSync(nodeCert, 'not a certificate\n');
    node.child.kill('SIGHUP');
    await eventually(
      () => node.log.some((line) => line.includes('the TLS certificate in force stays')),
      10_000,
    );
    expect((await client(certs.caCert).get('tls/a'))?.value).toBe('1');

    copyFileSync(certs.otherServerCert, nodeCert);
    copyFileSync(certs.otherServerKey, nodeKey);
    node.child.kill('SIGHUP');
    await eventually(() => node.log.some((line) => line.includes('TLS certificate read again')), 10_000);
    expect((await client(certs.otherCaCert).get('tls/a'))?.value).toBe('1');
    expect((await refusal(() => client(certs.caCert).get('tls/a'))).error.code).toBe('TLS_ERROR');
  }, 60_000);
});

describe('TLS configuration errors', () => {
  it('a certificate without its key (or a key alone) is refused in one line, from flags, environment or config file', () => {
    const certOnly = aspenNode(['--http-tls-cert', certs.serverCert]);
    expect(certOnly.code).toBe(EXIT_CONFIG);
    expect(certOnly.lines).toEqual([
      expect.stringMatching(
        /^aspen-node: --http-tls-cert and --http-tls-key go together.*only --http-tls-cert/,
      ) as string,
    ]);
    const keyOnly = aspenNode([], { ASPEN_HTTP_TLS_KEY: certs.serverKey });
    expect([keyOnly.code, keyOnly.lines]).toEqual([
      EXIT_CONFIG,
      [expect.stringMatching(/only --http-tls-key was given/) as string],
    ]);
    const toml = join(certs.dir, 'aspen.toml');
    writeFileSync(toml, `http_tls_cert = "${certs.serverCert}"\n`);
    const fromFile = aspenNode(['--config', toml]);
    expect([fromFile.code, fromFile.lines]).toEqual([
      EXIT_CONFIG,
      [expect.stringMatching(/go together/) as string],
    ]);
  }, 60_000);

  it('a missing, non-PEM or mismatched file is refused in one line naming it', () => {
    const cases: [string, string, RegExp][] = [
      [
        join(certs.dir, 'missing.crt'),
        certs.serverKey,
        /^aspen-node: cannot read --http-tls-cert .*missing\.crt: ENOENT/,
      ],
      [
        certs.serverKey,
        certs.serverKey,
        /^aspen-node: --http-tls-cert .*server\.key is not a PEM certificate/,
      ],
      [
        certs.serverCert,
        certs.serverCert,
        /^aspen-node: --http-tls-key .*server\.crt is not a PEM private key/,
      ],
      [
        certs.serverCert,
        certs.otherServerKey,
        /^aspen-node: --http-tls-key .*other-server\.key does not belong to --http-tls-cert/,
      ],
    ];
    for (const [cert, key, message] of cases) {
      const run = aspenNode(['--http-tls-cert', cert, '--http-tls-key', key]);
      expect([run.code, run.lines]).toEqual([EXIT_CONFIG, [expect.stringMatching(message) as string]]);
    }
  }, 60_000);

  it('a certificate outside its validity period is named for the start-up warning', () => {
    const tls = { cert: certs.pem(certs.serverCert), key: certs.pem(certs.serverKey) };
    const dayMs = 24 * 60 * 60 * 1_000;
    expect(certificateProblem(tls, Date.now())).toBeNull();
    expect(certificateProblem(tls, Date.now() + 3 * dayMs)).toMatch(/^it expired on /);
    expect(certificateProblem(tls, Date.now() - dayMs)).toMatch(/^it is not valid before /);
  });
});
