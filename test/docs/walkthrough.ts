import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '../../src/bench/ports.ts';

/**
 * Runs a walkthrough of the docs as written: every ```sh block between `<!-- walkthrough: NAME -->`
 * and `<!-- /walkthrough: NAME -->`, in order, as one bash script (`set -euo pipefail`) in an empty
 * directory, with `npx` resolving to this checkout's binaries. The doc's fixed ports (8001–8009,
 * 26001–26009) are mapped to free ones, so a run never collides with other tests or a running
 * cluster. Background processes the script starts are killed with its process group at the end.
 */
const REPO = resolve(import.meta.dirname, '../..');
const BIN = join(REPO, 'node_modules', '.bin');
/** The doc's ports the test remaps: HTTP 8001–8009 and Raft 26001–26009. */
const DOC_PORT = /\b(800[1-9]|2600[1-9])\b/g;
/** The script's file name in the walkthrough's directory. */
const SCRIPT_FILE = 'walkthrough.sh';
/** Markdown text a walkthrough may span, before anything is parsed. */
const DOC_CHARS_MAX = 1_000_000;

export interface WalkthroughRun {
  readonly code: number | null;
  readonly output: string;
  readonly dir: string;
}

/** The shell blocks of walkthrough `name` in `docPath` (relative to the repository), joined. */
export function walkthroughScript(docPath: string, name: string): string {
  const text = readFileSync(join(REPO, docPath), 'utf8');
  if (text.length > DOC_CHARS_MAX) throw new RangeError(`${docPath} is longer than ${DOC_CHARS_MAX}`);
  const open = `<!-- walkthrough: ${name} -->`;
  const close = `<!-- /walkthrough: ${name} -->`;
  const start = text.indexOf(open);
  const end = text.indexOf(close);
  if (start < 0 || end < start) throw new Error(`${docPath} has no walkthrough "${name}"`);
  const blocks = [...text.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
  if (blocks.length === 0) throw new Error(`walkthrough "${name}" has no sh blocks`);
  return blocks.join('\n');
}

async function remapPorts(script: string): Promise<string> {
  const ports = new Map<string, string>();
  for (const match of script.matchAll(DOC_PORT)) {
    const port = match[0];
    if (!ports.has(port)) ports.set(port, String(await freePort()));
  }
  return script.replace(DOC_PORT, (port) => ports.get(port) ?? port);
}

/** Run walkthrough `name` of `docPath`; resolves when the script ends or at `timeoutMs` (killed). */
export async function runWalkthrough(
  docPath: string,
  name: string,
  timeoutMs: number,
): Promise<WalkthroughRun> {
  const script = await remapPorts(walkthroughScript(docPath, name));
  const dir = mkdtempSync(join(tmpdir(), `aspen-walkthrough-${name}-`));
  // npx runs this checkout's binaries; in a subshell (a `&` job, a `$(…)`) it execs, so `$!` is the node.
  const prelude = 'set -euo pipefail\nnpx() { if [[ $BASHPID != "$$" ]]; then exec "$@"; else "$@"; fi; }\n';
  // From a file, not `bash -c`: the script's text in the shell's command line would match the
  // walkthrough's own `pkill -f` patterns.
  writeFileSync(join(dir, SCRIPT_FILE), `${prelude}${script}`);
  const child = spawn('bash', [SCRIPT_FILE], {
    cwd: dir,
    detached: true, // its own process group: the nodes it starts in the background die with it
    env: { ...process.env, PATH: `${checkoutBin(dir)}:${BIN}:${process.env.PATH ?? ''}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
  const code = await new Promise<number | null>((resolvePromise) => {
    const timer = setTimeout(() => {
      output += `\n[walkthrough killed after ${timeoutMs} ms]`;
      killGroup(child.pid);
    }, timeoutMs);
    child.on('exit', (exitCode) => {
      clearTimeout(timer);
      resolvePromise(exitCode);
    });
  });
  killGroup(child.pid);
  return { code, output, dir };
}

/**
 * `aspen` and `aspen-node` of this checkout's sources, in `dir`/.bin: node_modules/.bin links them
 * through the `aspen` package, which in a git worktree sharing another checkout's node_modules is
 * that other checkout.
 */
function checkoutBin(dir: string): string {
  const bin = join(dir, '.bin');
  mkdirSync(bin);
  for (const name of ['aspen', 'aspen-node']) {
    const shim = join(bin, name);
    writeFileSync(
      shim,
      `#!/bin/sh\nexec node ${JSON.stringify(join(REPO, 'src', 'bin', `${name}.ts`))} "$@"\n`,
    );
    chmodSync(shim, 0o755);
  }
  return bin;
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

export function removeWalkthroughDir(run: WalkthroughRun): void {
  rmSync(run.dir, { recursive: true, force: true });
}
