import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { resolve } from 'node:path';
import { listenLoopback } from '../support/loopback-server.ts';

export { closedPort } from '../support/loopback-server.ts';

/** Running the aspen binary as a user would, against scripted or closed endpoints (the CLI tests). */
const BIN = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const RUN_TIMEOUT_MS = 20_000;

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Run the aspen binary as a user would (stdio are pipes, not a terminal; stdin is `input`, or empty);
 * resolves with its exit code and output. `watch` sees the stdout so far after each chunk (to signal it).
 */
export function aspen(
  args: readonly string[],
  env: Record<string, string> = {},
  input?: string | Buffer,
  watch?: (stdout: string, child: ChildProcess) => void,
): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    // The caller's ASPEN_ENDPOINTS must not leak into the runs.
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => name !== 'ASPEN_ENDPOINTS'),
    );
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...inherited, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.on('error', () => undefined); // aspen may stop reading early (an oversized input)
    child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      watch?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`aspen ${args.join(' ')} did not finish`));
    }, RUN_TIMEOUT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** A scripted server answering each path with [status, body] after `delayMs`. */
export async function fakeServer(
  cleanups: (() => Promise<void> | void)[],
  answer: (path: string) => readonly [number, unknown],
  delayMs = 0,
): Promise<string> {
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const [status, body] = answer(request.url ?? '');
      setTimeout(() => {
        response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      }, delayMs);
    });
  });
  return listenLoopback(server, cleanups);
}
