/**
 * The lease commands of the aspen CLI: `aspen lease grant|keepalive|revoke|info|list` (docs/cli.md).
 * `aspen lease keepalive ID` keeps renewing until SIGINT or SIGTERM (exit 0) or until the lease is lost (exit 6).
 */
import type { AddCommand } from './aspen-command.ts';
import type { LeaseSummary } from '../api/types.ts';
import type { KvClient } from '../client/kv-client.ts';
import type { KeeperEnd } from '../client/lease.ts';
import { InputError } from './aspen-txn.ts';

/** What the lease commands need of the CLI: the client, the output mode, and how to print a line. */
export interface LeaseContext {
  readonly kv: KvClient;
  readonly json: boolean;
  readonly print: (text: string) => void;
  readonly table: (header: readonly string[], rows: readonly (readonly string[])[]) => string;
}

export type LeaseAction = (
  context: LeaseContext,
  args: readonly string[],
  options: Readonly<Record<string, string | undefined>>,
) => Promise<void>;

/** `aspen lease keepalive` lost its lease (LEASE_NOT_FOUND, or no renewal before the deadline): exit 6. */
export class LeaseLostError extends Error {}

/** A positive integer argument (an id, a TTL); the server checks the range. */
function wholeNumber(text: string | undefined, what: string): number {
  const value = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1)
    throw new InputError(`${what} must be a positive integer, got "${text ?? ''}"`);
  return value;
}

export const leaseId = (text: string | undefined): number => wholeNumber(text, 'a lease id');

/** Keep renewing until SIGINT or SIGTERM (resolves) or loss (rejects with LeaseLostError), printing each renewal. */
async function keepRenewing({ kv, json, print }: LeaseContext, id: number): Promise<void> {
  const keeper = kv.lease.keepAliveForever(id, {
    onRenewed: (renewal) => {
      print(json ? JSON.stringify(renewal) : `lease ${id} renewed (ttl ${renewal.ttl_seconds} s)`);
    },
  });
  const interrupt = (): void => {
    keeper.stop();
  };
  process.once('SIGINT', interrupt).once('SIGTERM', interrupt);
  let end: KeeperEnd;
  try {
    end = await keeper.done;
  } finally {
    process.off('SIGINT', interrupt).off('SIGTERM', interrupt);
  }
  if (end.reason === 'stopped') return;
  const why =
    end.cause === 'not_found'
      ? 'the cluster no longer has it (expired or revoked)'
      : end.cause === 'deadline'
        ? 'no renewal was acknowledged within its TTL; presume it expired'
        : `a renewal was refused: ${end.error?.code ?? '?'}: ${end.error?.message ?? ''}`;
  throw new LeaseLostError(`lease ${id} lost: ${why}`);
}

function leaseRows(leases: readonly LeaseSummary[]): string[][] {
  return leases.map((lease) => [
    String(lease.lease_id),
    String(lease.ttl_seconds),
    String(lease.remaining_seconds),
  ]);
}

/** The actions, by command name as `aspen lease NAME` (see addLeaseCommands). */
export const leaseActions: Readonly<Record<string, LeaseAction>> = {
  grant: async ({ kv, json, print }, [ttl], options) => {
    const ttlSeconds = wholeNumber(ttl, 'a TTL in seconds');
    const id = options.id === undefined ? undefined : leaseId(options.id);
    const result = await kv.lease.grant(ttlSeconds, id === undefined ? {} : { leaseId: id });
    print(
      json
        ? JSON.stringify(result)
        : `lease ${result.lease_id} granted (ttl ${result.ttl_seconds} s, log index ${result.log_index})`,
    );
  },
  keepalive: async (context, [id], options) => {
    const lease = leaseId(id);
    if (options.once === undefined) {
      await keepRenewing(context, lease);
      return;
    }
    const result = await context.kv.lease.keepAlive(lease);
    context.print(
      context.json ? JSON.stringify(result) : `lease ${lease} renewed (ttl ${result.ttl_seconds} s)`,
    );
  },
  revoke: async ({ kv, json, print }, [id]) => {
    const result = await kv.lease.revoke(leaseId(id));
    print(json ? JSON.stringify(result) : `lease ${result.lease_id} revoked (log index ${result.log_index})`);
  },
  info: async ({ kv, json, print }, [id], options) => {
    const lease = leaseId(id);
    const result =
      options.keys === undefined ? await kv.lease.info(lease) : await kv.lease.infoWithKeys(lease);
    if (json) {
      print(JSON.stringify(result));
      return;
    }
    const head = `lease ${result.lease_id}: ttl ${result.ttl_seconds} s, ${result.remaining_seconds} s remaining`;
    const keys =
      result.keys === undefined
        ? []
        : [`${result.keys.length} ${result.keys.length === 1 ? 'key' : 'keys'}`, ...result.keys];
    print([head, ...keys].join('\n'));
  },
  list: async ({ kv, json, print, table }) => {
    const result = await kv.lease.list();
    print(json ? JSON.stringify(result) : table(['LEASE_ID', 'TTL', 'REMAINING'], leaseRows(result.leases)));
  },
};

/** The `aspen lease …` subcommands, each added by `add` (names as in leaseActions). */
export function addLeaseCommands(add: AddCommand): void {
  add('grant <ttl>', 'grant a lease of TTL seconds; prints its id', (command) =>
    command.option('--id <n>', 'the lease id to use (default: the cluster chooses)'),
  );
  add(
    'keepalive <id>',
    'renew a lease until Ctrl-C, printing each renewal; exit 6 when it is lost (--once: renew once)',
    (command) => command.option('--once', 'renew once and exit (exit 3 when the lease does not exist)'),
  );
  add('revoke <id>', 'revoke a lease: its keys are deleted with it');
  add('info <id>', 'TTL and seconds remaining (the leader clock)', (command) =>
    command.option('--keys', 'and the keys attached to it'),
  );
  add('list', 'every lease: id, TTL, seconds remaining');
}
