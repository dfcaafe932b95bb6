import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { freePortRun } from '../../src/bench/ports.ts';

/**
 * Runs a walkthrough of the docs as written: every ```sh block between `<!-- walkthrough: NAME -->`
 * and `<!-- /walkthrough: NAME -->` (a walkthrough may span several such regions of one document,
 * read in order), as one bash script (`set -euo pipefail`) in an empty directory, with `npx`
 * resolving to this checkout's binaries. The doc's fixed ports (HTTP 8001–8009, Raft 26001–26009)
 * are mapped to free runs of ports that keep their numbering (8001 → H+1, 8002 → H+2, …), so a run
 * never collides with other tests or a running cluster; ASPEN_ENDPOINTS names the mapped 8001–8003
 * (the CLI's default endpoints are the doc's), and ASPEN_LOCAL_HTTP_PORT_BASE /
 * ASPEN_LOCAL_RAFT_PORT_BASE the bases and ASPEN_LOCAL_DATA_DIR a directory of the run (`npm start`'s
 * ports and data, so `npm start` run in this checkout leaves its data alone). Background processes the script
 * starts are killed with its process group at the end.
 */
export const REPO = resolve(import.meta.dirname, '../..');
const BIN = join(REPO, 'node_modules', '.bin');
/** The doc's ports the test remaps: HTTP 8001–8009 and Raft 26001–26009. */
const DOC_PORT = /\b(800[1-9]|2600[1-9])\b/g;
const DOC_HTTP_PORT_BASE = 8000;
const DOC_RAFT_PORT_BASE = 26000;
/** Ports per run: the doc's nodes 1–9. */
const DOC_PORTS_PER_BASE = 9;
/** The script's file name in the walkthrough's directory. */
const SCRIPT_FILE = 'walkthrough.sh';
/** Markdown text a walkthrough may span, before anything is parsed. */
const DOC_CHARS_MAX = 1_000_000;
/** Regions of one walkthrough in one document. */
const REGIONS_MAX = 32;
/** The shells a fenced block may name to be a command block. */
export const SHELL_FENCE = /^```(sh|bash|shell|console)\s*$/;

export interface WalkthroughRun {
  readonly code: number | null;
  readonly output: string;
  readonly dir: string;
}

export interface WalkthroughOptions {
  /**
   * Where the script runs: a new empty directory (default), or this checkout (for `npm run …`
   * commands, which need the package). Every run gets its own ports either way.
   */
  readonly inRepo?: boolean;
  /**
   * Bounds on commands that would run for long as written (`--seeds 10000`), applied to the script
   * before it runs; each must match, so a rewrite that no longer applies fails instead of silently
   * running the long version.
   */
  readonly bounds?: readonly (readonly [RegExp, string])[];
}

export function readDoc(docPath: string): string {
  const text = readFileSync(join(REPO, docPath), 'utf8');
  if (text.length > DOC_CHARS_MAX) throw new RangeError(`${docPath} is longer than ${DOC_CHARS_MAX}`);
  return text;
}

/** The shell blocks of walkthrough `name` in `docPath` (relative to the repository), joined. */
export function walkthroughScript(docPath: string, name: string): string {
  const text = readDoc(docPath);
  const open = `<!-- walkthrough: ${name} -->`;
  const close = `<!-- /walkthrough: ${name} -->`;
  const blocks: string[] = [];
  let from = 0;
  for (let region = 0; region < REGIONS_MAX; region += 1) {
    const start = text.indexOf(open, from);
    if (start < 0) break;
    const end = text.indexOf(close, start);
    if (end < 0) throw new Error(`${docPath}: walkthrough "${name}" opened and never closed`);
    const shells = text.slice(start, end).matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```$/gm);
    blocks.push(...[...shells].map((match) => match[1] ?? ''));
    from = end + close.length;
  }
  if (from === 0) throw new Error(`${docPath} has no walkthrough "${name}"`);
  if (blocks.length === 0) throw new Error(`walkthrough "${name}" has no sh blocks`);
  return blocks.join('\n');
}

interface Ports {
  readonly httpBase: number;
  readonly raftBase: number;
}

function remapPorts(script: string, ports: Ports): string {
  return script.replace(DOC_PORT, (text) => {
    const port = Number(text);
    return port > DOC_RAFT_PORT_BASE
      ? String(ports.raftBase + port - DOC_RAFT_PORT_BASE)
      : String(ports.httpBase + port - DOC_HTTP_PORT_BASE);
  });
}

function applyBounds(script: string, bounds: WalkthroughOptions['bounds']): string {
  let bounded = script;
  for (const [pattern, replacement] of bounds ?? []) {
    if (!pattern.test(bounded))
      throw new Error(`the bound ${String(pattern)} matches nothing in the walkthrough`);
    bounded = bounded.replace(pattern, replacement);
  }
  return bounded;
}

export interface RunningWalkthrough {
  readonly dir: string;
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  readonly ports: Ports;
  /** Everything the script printed so far (stdout and stderr interleaved). */
  output(): string;
  /** Resolves with the script's exit code (null: killed). */
  readonly exited: Promise<number | null>;
  /** Kill the script's process group (everything it started). */
  stop(): void;
}

/** Start walkthrough `name` of `docPath` and return at once (the test drives and stops it). */
export async function startWalkthrough(
  docPath: string,
  name: string,
  options: WalkthroughOptions = {},
): Promise<RunningWalkthrough> {
  const ports = {
    httpBase: await freePortRun(DOC_PORTS_PER_BASE),
    raftBase: await freePortRun(DOC_PORTS_PER_BASE),
  };
  const script = remapPorts(applyBounds(walkthroughScript(docPath, name), options.bounds), ports);
  const dir = mkdtempSync(join(tmpdir(), `aspen-walkthrough-${name}-`));
  // npx runs this checkout's binaries; in a subshell (a `&` job, a `$(…)`) it execs, so `$!` is the node.
  const prelude = 'set -euo pipefail\nnpx() { if [[ $BASHPID != "$$" ]]; then exec "$@"; else "$@"; fi; }\n';
  // From a file, not `bash -c`: the script's text in the shell's command line would match the
  // walkthrough's own `pkill -f` patterns.
  writeFileSync(join(dir, SCRIPT_FILE), `${prelude}${script}`);
  const endpoints = [1, 2, 3].map((id) => `http://127.0.0.1:${ports.httpBase + id}`).join(',');
  const child = spawn('bash', [join(dir, SCRIPT_FILE)], {
    cwd: options.inRepo === true ? REPO : dir,
    detached: true, // its own process group: the nodes it starts in the background die with it
    env: {
      ...process.env,
      PATH: `${checkoutBin(dir)}:${BIN}:${process.env.PATH ?? ''}`,
      ASPEN_ENDPOINTS: endpoints,
      ASPEN_LOCAL_HTTP_PORT_BASE: String(ports.httpBase),
      ASPEN_LOCAL_RAFT_PORT_BASE: String(ports.raftBase),
      ASPEN_LOCAL_DATA_DIR: join(dir, 'data', 'local'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
  const exited = new Promise<number | null>((resolvePromise) => {
    child.on('exit', (exitCode) => {
      resolvePromise(exitCode);
    });
  });
  return {
    dir,
    child,
    ports,
    output: () => output,
    exited,
    stop: () => {
      killGroup(child.pid);
    },
  };
}

/** Run walkthrough `name` of `docPath`; resolves when the script ends or at `timeoutMs` (killed). */
export async function runWalkthrough(
  docPath: string,
  name: string,
  timeoutMs: number,
  options: WalkthroughOptions = {},
): Promise<WalkthroughRun> {
  const running = await startWalkthrough(docPath, name, options);
  const deadline = { passed: false };
  const timer = setTimeout(() => {
    deadline.passed = true;
    running.stop();
  }, timeoutMs);
  const code = await running.exited;
  clearTimeout(timer);
  running.stop();
  const note = deadline.passed ? `\n[walkthrough killed after ${timeoutMs} ms]` : '';
  return { code, output: running.output() + note, dir: running.dir };
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

export function removeWalkthroughDir(run: { readonly dir: string }): void {
  rmSync(run.dir, { recursive: true, force: true });
}
