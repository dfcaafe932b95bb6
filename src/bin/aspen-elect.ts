/**
 * `aspen elect NAME VALUE [--ttl S] [--timeout S]` (docs/cli.md): campaign, print once elected,
 * hold the leadership (its lease kept alive) until SIGINT or SIGTERM, then resign (exit 0); the
 * lease lost exits 6 (LeaseLostError). `aspen elect --observe NAME`: one line per leader change.
 */
import type { AddCommand } from './aspen-command.ts';
import type { LeaderResult } from '../api/types.ts';
import { LEASE_TTL_SECONDS_MAX, LOCK_TIMEOUT_MS_DEFAULT, LOCK_TIMEOUT_MS_MAX } from '../base/limits.ts';
import type { LeaderChange, Leadership } from '../client/election.ts';
import { LeaseLostError, type LeaseContext } from './aspen-lease.ts';
import { abandonOnSignal, LOCK_TTL_SECONDS_DEFAULT, seconds } from './aspen-lock.ts';
import { InputError } from './aspen-txn.ts';

/** The signals that end holding (resign) or observing, and abandon a campaign that waits. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/** Wait for SIGINT/SIGTERM (resolves false) or the loss of the leadership's lease (true). */
function hold(leadership: Leadership): Promise<boolean> {
  return new Promise((resolve) => {
    const finish = (lost: boolean): void => {
      leadership.lost.removeEventListener('abort', onLost);
      for (const signal of STOP_SIGNALS) process.off(signal, onStop);
      resolve(lost);
    };
    const onStop = (): void => {
      finish(false);
    };
    const onLost = (): void => {
      finish(true);
    };
    if (leadership.lost.aborted) {
      resolve(true);
      return;
    }
    leadership.lost.addEventListener('abort', onLost, { once: true });
    for (const signal of STOP_SIGNALS) process.on(signal, onStop);
  });
}

function leaderText(leader: LeaderResult | null): string {
  return leader === null
    ? 'no leader'
    : `leader ${leader.value} (key ${leader.key}, revision ${leader.revision})`;
}

/** Campaign, print the leadership, hold it until a stop signal (resign, exit 0) or its loss (exit 6). */
async function campaign(
  { kv, json, print }: LeaseContext,
  name: string,
  value: string,
  options: Readonly<Record<string, string | undefined>>,
): Promise<void> {
  const ttlSeconds = seconds(options.ttl, '--ttl', LOCK_TTL_SECONDS_DEFAULT, LEASE_TTL_SECONDS_MAX);
  const timeoutMs =
    1_000 *
    seconds(options.timeout, '--timeout', LOCK_TIMEOUT_MS_DEFAULT / 1_000, LOCK_TIMEOUT_MS_MAX / 1_000);
  const leadership = await abandonOnSignal((signal) =>
    kv.campaign(name, value, { ttlSeconds, timeoutMs, signal }),
  );
  const { key, revision, leaseId } = leadership;
  if (json) print(JSON.stringify({ name, key, revision, value, lease_id: leaseId }));
  else print(`elected: ${name} = ${value} (key ${key}, revision ${revision})`);
  const lost = await hold(leadership);
  try {
    await leadership.resign();
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    process.stderr.write(`aspen: resigning from ${name} failed (its lease ends by its TTL): ${why}\n`);
  }
  if (lost) throw new LeaseLostError(`the lease of the leadership of ${name} was lost`);
  process.stderr.write(`aspen: resigned from ${name}\n`);
}

/** One line per leader change (JSON lines with --json) until SIGINT or SIGTERM. */
async function observe({ kv, json, print }: LeaseContext, name: string): Promise<void> {
  const stop = new AbortController();
  const onStop = (): void => {
    stop.abort();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onStop);
  try {
    const changes: AsyncIterable<LeaderChange> = kv.observe(name, { signal: stop.signal });
    for await (const change of changes) print(json ? JSON.stringify(change) : leaderText(change.leader));
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onStop);
  }
}

/** The `aspen elect` action: campaign and hold, or (--observe) print the leader changes. */
export async function electAction(
  context: LeaseContext,
  [name = '', value]: readonly string[],
  options: Readonly<Record<string, string | undefined>>,
): Promise<void> {
  if (options.observe !== undefined) {
    // a flag: commander gives true
    if (value !== undefined) throw new InputError('elect --observe takes only the NAME');
    await observe(context, name);
    return;
  }
  if (value === undefined) throw new InputError('give the VALUE to campaign with (or --observe NAME)');
  await campaign(context, name, value, options);
}

/** The `aspen elect` command. */
export function addElectCommand(add: AddCommand): void {
  add(
    'elect <name> [value]',
    'campaign in the election NAME with VALUE, print once elected and hold the leadership (its lease ' +
      'kept alive) until Ctrl-C or SIGTERM, then resign; exits 6 when the lease was lost, 7 when not ' +
      'elected in time. With --observe: print the leader of NAME and each change of it until Ctrl-C',
    (command) =>
      command
        .summary('campaign for leadership, or observe the leader (aspen elect --observe NAME)')
        .usage('NAME VALUE [--ttl S] [--timeout S] | --observe NAME')
        .option('--observe', 'print the leader and one line per change instead of campaigning')
        .option('--ttl <s>', `the lease TTL in seconds (default ${LOCK_TTL_SECONDS_DEFAULT})`)
        .option(
          '--timeout <s>',
          `wait at most this long to be elected (default ${LOCK_TIMEOUT_MS_DEFAULT / 1_000})`,
        ),
  );
}
