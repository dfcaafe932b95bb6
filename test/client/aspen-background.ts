import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
/** Longest a background aspen may run (then SIGKILL), and how long `until` waits for output. */
export const WAIT_MS_MAX = 20_000;
/** Pause between looks at the output while `until` waits. */
const POLL_MS = 20;

/**
 * The aspen binary running in the background (stdin ignored, the caller's ASPEN_ENDPOINTS not
 * inherited): its output so far, its non-empty stdout lines, a wait for a line count, its exit code.
 * `cleanups` gets a SIGKILL for it.
 */
export function background(args: readonly string[], cleanups: (() => Promise<void> | void)[]) {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => name !== 'ASPEN_ENDPOINTS'),
  );
  const child = spawn(process.execPath, [BIN, ...args], {
    env: inherited,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    output.stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    output.stderr += text;
  });
  const exited = new Promise<number | null>((resolveExit) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS_MAX);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolveExit(code);
    });
  });
  cleanups.push(() => {
    child.kill('SIGKILL');
  });
  const lines = () => output.stdout.split('\n').filter((line) => line.length > 0);
  const until = async (count: number) => {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (lines().length < count) {
      if (Date.now() > deadline) throw new Error(`aspen ${args.join(' ')} printed ${JSON.stringify(output)}`);
      await new Promise((resolveWait) => setTimeout(resolveWait, POLL_MS));
    }
  };
  return { child, output, exited, lines, until };
}
