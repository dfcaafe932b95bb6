import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

/** Bounds of one crash round: how long the child may take to come up, writes kept in flight. */
export const STARTUP_TIMEOUT_MS = 20_000;
export const WRITES_IN_FLIGHT_MAX = 32;
export const KILL_AFTER_MS_MAX = 150;

const CHILD = resolve(import.meta.dirname, 'crash-child.ts');

export interface CrashReport {
  readonly rounds: number;
  readonly acknowledged: number;
  readonly sent: number;
  readonly problems: readonly string[];
}

interface Round {
  readonly stored: Map<string, string>;
  readonly acknowledgedKeys: string[];
}

/** Start the child, read its state, write until SIGKILL after `killAfterMs` of writing. */
function runRound(
  dataDir: string,
  round: number,
  killAfterMs: number,
  sent: Map<string, string>,
  nextValue: (key: string) => string,
): Promise<Round> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CHILD, dataDir], {
      // Every third round starts as after a reboot: the state is rebuilt from the snapshot file.
      env: {
        ...process.env,
        CRASH_SEED: String(round),
        CRASH_BOOT_ID: round % 3 === 0 ? `reboot-${round}` : '',
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const stored = new Map<string, string>();
    const acknowledgedKeys: string[] = [];
    let inFlight = 0;
    let ready = false;
    const startup = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`round ${round}: child not ready within ${STARTUP_TIMEOUT_MS} ms`));
    }, STARTUP_TIMEOUT_MS);
    const pump = (): void => {
      while (ready && inFlight < WRITES_IN_FLIGHT_MAX && child.stdin.writable) {
        const key = `k${sent.size}`;
        const value = nextValue(key);
        sent.set(key, value); // recorded before it can possibly be stored
        inFlight += 1;
        child.stdin.write(`W ${key} ${value}\n`);
      }
    };
    createInterface({ input: child.stdout }).on('line', (line) => {
      const [verb, key, value] = line.split(' ');
      if (verb === 'KEY' && key !== undefined && value !== undefined) stored.set(key, value);
      else if (verb === 'ACK' && key !== undefined) {
        acknowledgedKeys.push(key);
        inFlight -= 1;
        pump();
      } else if (verb === 'READY') {
        clearTimeout(startup);
        ready = true;
        pump();
        setTimeout(() => {
          child.kill('SIGKILL');
        }, killAfterMs);
      }
    });
    child.stdin.on('error', () => undefined); // the child may die while we write
    child.on('exit', () => {
      clearTimeout(startup);
      resolvePromise({ stored, acknowledgedKeys });
    });
  });
}

/** Every acknowledged write is present; nothing present was never sent or has a value we did not send. */
function check(
  stored: ReadonlyMap<string, string>,
  acknowledged: ReadonlySet<string>,
  sent: ReadonlyMap<string, string>,
): string[] {
  const problems: string[] = [];
  for (const key of acknowledged) {
    if (stored.get(key) !== sent.get(key))
      problems.push(`acknowledged ${key}=${sent.get(key) ?? '?'} is ${stored.get(key) ?? 'missing'}`);
  }
  for (const [key, value] of stored) {
    if (sent.get(key) !== value) problems.push(`stored ${key}=${value} was never written that way`);
  }
  return problems;
}

/** SIGKILL a single-node RaftNode on LMDB `rounds` times while it acknowledges writes. */
export async function runCrashTest(rounds: number, seed = 1): Promise<CrashReport> {
  const dataDir = mkdtempSync(join(tmpdir(), 'aspen-crash-'));
  const sent = new Map<string, string>();
  const acknowledged = new Set<string>();
  const problems: string[] = [];
  let random = seed;
  const nextRandom = (): number => {
    random = (Math.imul(random, 1_103_515_245) + 12_345) >>> 0;
    return random;
  };
  try {
    for (let round = 1; round <= rounds + 1 && problems.length === 0; round += 1) {
      const killAfterMs = round > rounds ? 0 : nextRandom() % KILL_AFTER_MS_MAX;
      const result = await runRound(
        dataDir,
        round,
        killAfterMs,
        sent,
        (key) => `${key}-v${nextRandom() % 1_000_000}`,
      );
      problems.push(
        ...check(result.stored, acknowledged, sent).map((problem) => `after round ${round - 1}: ${problem}`),
      );
      for (const key of result.acknowledgedKeys) acknowledged.add(key);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
  return { rounds, acknowledged: acknowledged.size, sent: sent.size, problems };
}
