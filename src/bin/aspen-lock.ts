/**
 * `aspen lock NAME [--ttl S] [--timeout S] -- CMD…` (docs/cli.md): take the lock, run CMD with
 * ASPEN_LOCK_KEY and ASPEN_FENCING_TOKEN while the lease is kept alive, release on exit. Lease lost:
 * CMD gets SIGTERM, then SIGKILL after LOCK_KILL_GRACE_MS, and aspen exits 6 (LeaseLostError).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { AddCommand } from './aspen-command.ts';
import { LEASE_TTL_SECONDS_MAX, LOCK_TIMEOUT_MS_DEFAULT, LOCK_TIMEOUT_MS_MAX } from '../base/limits.ts';
import type { Lock } from '../client/lock.ts';
import { LeaseLostError, type LeaseContext } from './aspen-lease.ts';
import { InputError } from './aspen-txn.ts';

/** The lease TTL of `aspen lock` without --ttl. */
export const LOCK_TTL_SECONDS_DEFAULT = 10;
/** After SIGTERM on lease loss, CMD has this long to exit before SIGKILL. */
export const LOCK_KILL_GRACE_MS = 5_000;
/** CMD could not be started (not found, not executable): the shells' code. */
export const EXIT_COMMAND_NOT_STARTED = 127;
/** CMD ended by a signal: this plus the signal number, as shells report it. */
export const EXIT_SIGNAL_BASE = 128;

/** The signals aspen forwards to CMD (and that, while waiting for the lock, abandon the wait). */
const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

export function seconds(text: string | undefined, what: string, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1 || value > max)
    throw new InputError(`${what} must be a whole number of seconds in [1, ${max}], got "${text}"`);
  return value;
}

/** How CMD ended: its exit code, or EXIT_SIGNAL_BASE + the signal's number. */
function exitCodeOfChild(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal === null ? 0 : (constants.signals[signal] as number | undefined);
  return EXIT_SIGNAL_BASE + (number ?? 0);
}

/** Run CMD until it exits; SIGTERM then SIGKILL on lease loss; SIGINT/SIGTERM to aspen forwarded. */
function runHolding(command: readonly string[], held: Lock): Promise<number> {
  const [file, ...args] = command;
  if (file === undefined) throw new InputError('give the command to run after "--"');
  const env = { ...process.env, ASPEN_LOCK_KEY: held.key, ASPEN_FENCING_TOKEN: String(held.fencingToken) };
  return new Promise((resolve) => {
    const child: ChildProcess = spawn(file, args, { stdio: 'inherit', env });
    let killTimer: NodeJS.Timeout | undefined;
    const onLost = (): void => {
      process.stderr.write(`aspen: lease of lock ${held.name} lost: sending SIGTERM to the command\n`);
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), LOCK_KILL_GRACE_MS);
    };
    const forward = (signal: NodeJS.Signals): void => {
      child.kill(signal);
    };
    held.lost.addEventListener('abort', onLost, { once: true });
    for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
    const finish = (code: number): void => {
      clearTimeout(killTimer);
      held.lost.removeEventListener('abort', onLost);
      for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
      resolve(code);
    };
    child.once('error', (error) => {
      process.stderr.write(`aspen: cannot run ${file}: ${error.message}\n`);
      finish(EXIT_COMMAND_NOT_STARTED);
    });
    child.once('exit', (code, signal) => {
      finish(exitCodeOfChild(code, signal));
    });
  });
}

/** Run `work` with a signal that SIGINT or SIGTERM aborts (a wait for a lock or a campaign is abandoned). */
export async function abandonOnSignal<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abandon = new AbortController();
  const onSignal = (): void => {
    abandon.abort();
  };
  for (const signal of FORWARDED_SIGNALS) process.on(signal, onSignal);
  try {
    return await work(abandon.signal);
  } finally {
    for (const signal of FORWARDED_SIGNALS) process.off(signal, onSignal);
  }
}

/**
 * The `aspen lock` action: resolves to CMD's exit code; rejects with LeaseLostError (exit 6) when the
 * lease was lost while CMD ran, or with the KvError of the lock call (LOCK_TIMEOUT: exit 7).
 */
export async function lockAction(
  { kv, json, print }: LeaseContext,
  [name = '', ...command]: readonly string[],
  options: Readonly<Record<string, string | undefined>>,
): Promise<number> {
  const ttlSeconds = seconds(options.ttl, '--ttl', LOCK_TTL_SECONDS_DEFAULT, LEASE_TTL_SECONDS_MAX);
  const timeoutSeconds = seconds(
    options.timeout,
    '--timeout',
    LOCK_TIMEOUT_MS_DEFAULT / 1_000,
    LOCK_TIMEOUT_MS_MAX / 1_000,
  );
  if (command.length === 0) throw new InputError('give the command to run after "--"');
  const held = await abandonOnSignal((signal) =>
    kv.lock(name, { ttlSeconds, timeoutMs: timeoutSeconds * 1_000, signal }),
  );
  const summary = {
    name: held.name,
    key: held.key,
    fencing_token: held.fencingToken,
    lease_id: held.leaseId,
  };
  if (json) print(JSON.stringify(summary));
  else
    process.stderr.write(
      `aspen: lock ${held.name} held (key ${held.key}, fencing token ${held.fencingToken})\n`,
    );
  const code = await runHolding(command, held);
  try {
    await held.release();
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    process.stderr.write(`aspen: releasing lock ${held.name} failed (its lease ends by its TTL): ${why}\n`);
  }
  if (held.lost.aborted)
    throw new LeaseLostError(`the lease of lock ${held.name} was lost while the command ran`);
  return code;
}

/** The `aspen lock` command. */
export function addLockCommand(add: AddCommand): void {
  add(
    'lock <name> <command...>',
    'take the lock NAME, run COMMAND (after "--") with ASPEN_LOCK_KEY and ASPEN_FENCING_TOKEN in its ' +
      "environment while its lease is kept alive, release it when COMMAND exits; exits with COMMAND's " +
      'code, 6 when the lease was lost (COMMAND got SIGTERM), 7 when the lock was not taken in time',
    (command) =>
      command
        .summary('run a command while holding a lock (aspen lock NAME -- CMD …)')
        .usage('NAME [--ttl S] [--timeout S] -- COMMAND [ARGS…]')
        .option('--ttl <s>', `the lease TTL in seconds (default ${LOCK_TTL_SECONDS_DEFAULT})`)
        .option(
          '--timeout <s>',
          `wait at most this long for the lock (default ${LOCK_TIMEOUT_MS_DEFAULT / 1_000})`,
        ),
  );
}
