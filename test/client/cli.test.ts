import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE } from '../../src/bin/aspen.ts';
import { realNode } from './real-node.ts';

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const RUN_TIMEOUT_MS = 20_000;
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });

/** Run the aspen binary as a user would; resolves with its exit code and output. */
function aspen(args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
    child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`aspen ${args.join(' ')} did not finish`)); }, RUN_TIMEOUT_MS);
    child.on('exit', (code) => { clearTimeout(timer); resolvePromise({ code, stdout, stderr }); });
  });
}

describe('aspen CLI', () => {
  it('puts, gets, scans, deletes; tables by default and JSON with --json; exit codes scripts can rely on', async () => {
    const endpoint = await realNode(cleanups);
    const at = ['--endpoints', endpoint];
    expect(await aspen([...at, 'put', 'greeting', 'hello world'])).toMatchObject({ code: EXIT_OK, stdout: expect.stringMatching(/^OK \(log index \d+\)\n$/) as string });
    expect(await aspen([...at, 'get', 'greeting'])).toMatchObject({ code: EXIT_OK, stdout: 'hello world\n' });
    const json = await aspen([...at, '--json', 'get', 'greeting']);
    expect(JSON.parse(json.stdout)).toMatchObject({ key: 'greeting', value: 'hello world', version: 1 });
    // The environment variable serves as well as the flag.
    expect(await aspen(['put', 'app/b', '2'], { ASPEN_ENDPOINTS: endpoint })).toMatchObject({ code: EXIT_OK });
    await aspen([...at, 'put', 'app/a', '1']);
    const scan = await aspen([...at, 'scan', 'app/']);
    expect(scan.stdout.split('\n').filter((line) => line.length > 0)).toEqual([expect.stringMatching(/^KEY\s+VALUE$/), expect.stringMatching(/^app\/a\s+1$/), expect.stringMatching(/^app\/b\s+2$/)]);
    expect(JSON.parse((await aspen([...at, '--json', 'scan', 'app/', '--limit', '1'])).stdout)).toMatchObject({ count: 1, is_truncated: true });
    expect(await aspen([...at, 'delete', 'greeting'])).toMatchObject({ code: EXIT_OK, stdout: 'deleted\n' });
    const missing = await aspen([...at, 'get', 'greeting']);
    expect(missing).toMatchObject({ code: EXIT_NOT_FOUND, stdout: '' });
    expect(missing.stderr).toMatch(/^aspen: KEY_NOT_FOUND: /);
    const members = await aspen([...at, 'members']);
    expect(members.stdout).toMatch(/^ID\s+ROLE\s+ADDR\s+RAFT_ADDR\n1\s+leader\s+node-1\s+127\.0\.0\.1:26001\n$/);
    const status = await aspen([...at, 'status']);
    expect(status.stdout).toMatch(new RegExp(`${endpoint.replace(/[.]/g, '\\.')}\\s+1\\s+Leader\\s+\\d+\\s+1\\s`));
    expect(await aspen([...at, 'init', '1=127.0.0.1:26001'])).toMatchObject({ code: EXIT_FAILED, stderr: expect.stringMatching(/ALREADY_INITIALIZED/) as string });
  }, 60_000);

  it('usage errors exit 2 and an unreachable cluster exits 4, each with one line on stderr', async () => {
    const usage = await aspen(['get']);
    expect(usage.code).toBe(EXIT_USAGE);
    expect(usage.stderr).toMatch(/^aspen: missing required argument 'key'/);
    expect((await aspen(['frobnicate'])).code).toBe(EXIT_USAGE);
    expect((await aspen(['--endpoints', 'http://127.0.0.1:1', 'scan', '--limit', 'x'])).code).toBe(EXIT_USAGE);
    expect((await aspen(['change-membership', '1', 'two'])).code).toBe(EXIT_USAGE);
    const down = await aspen(['--endpoints', 'http://127.0.0.1:1', '--timeout-ms', '1000', 'put', 'k', 'v']);
    expect(down.code).toBe(EXIT_UNAVAILABLE);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    expect((await aspen(['--endpoints', 'http://127.0.0.1:1', '--timeout-ms', '1000', 'status'])).code).toBe(EXIT_UNAVAILABLE);
    expect((await aspen(['--help'])).code).toBe(EXIT_OK);
  }, 60_000);
});
