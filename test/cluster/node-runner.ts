import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
/** A refused start, or a fail-stop, ends well within this. */
export const EXIT_WAIT_MS = 60_000;

/** Run aspen-node until it exits on its own; its exit code and stderr lines. */
export function runToExit(
  args: readonly string[],
  waitMs = EXIT_WAIT_MS,
  env: Readonly<Record<string, string>> = {},
): Promise<{ code: number | null; lines: string[] }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`aspen-node did not exit within ${waitMs} ms: ${stderr}`));
    }, waitMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, lines: stderr.split('\n').filter((line) => line.length > 0) });
    });
  });
}
