#!/usr/bin/env node
/**
 * aspen: the command-line client. `aspen put greeting hello`, `aspen get greeting`, `aspen status`.
 * Endpoints from --endpoints or ASPEN_ENDPOINTS; tables by default, --json for scripts (docs/cli.md).
 */
// First: on a Node too old for the rest, one clear line and exit 1 (node-guard.ts).
import { isMain } from './node-guard.ts';
import { Command, CommanderError, Option } from 'commander';
import type { AddCommand } from './aspen-command.ts';
import {
  JOIN_TTL_SECONDS_DEFAULT,
  JOIN_TTL_SECONDS_MAX,
  JOIN_TTL_SECONDS_MIN,
  VALUE_BYTES_MAX,
} from '../api/limits.ts';
import type { ClusterNode, ClusterState } from '../api/types.ts';
import { ASPEN_VERSION } from '../api/version.ts';
import { KvClient } from '../client/kv-client.ts';
import { readBoundedFile } from '../cluster/bounded-file.ts';
import { ConfigError } from '../cluster/errors.ts';
import { ADD_LEARNER_TIMEOUT_MS_DEFAULT, type MemberSpec } from '../client/options.ts';
import { KvError } from '../client/errors.ts';
import type { WatchUpdate } from '../client/watch.ts';
import { BackupFormatError } from '../api/backup-format.ts';
import { addBackupCommands, backupActions } from './aspen-backup.ts';
import { addLeaseCommands, leaseActions, leaseId, LeaseLostError } from './aspen-lease.ts';
import { addElectCommand, electAction } from './aspen-elect.ts';
import { addLockCommand, lockAction } from './aspen-lock.ts';
import { addClusterCommands, EXIT_UNHEALTHY, health, leader, status } from './aspen-cluster.ts';
import { endpointUrls } from './aspen-endpoints.ts';
import { cliMessage } from './aspen-hints.ts';
import {
  casArguments,
  compareFailed,
  InputError,
  readBounded,
  readTransaction,
  TXN_INPUT_BYTES_MAX,
  txnText,
} from './aspen-txn.ts';

export { EXIT_UNHEALTHY };

export const EXIT_OK = 0;
/** The cluster answered with an error (bad input, already initialized, …). */
export const EXIT_FAILED = 1;
/** Unknown command, missing or malformed argument. */
export const EXIT_USAGE = 2;
/** `get` of a key that does not exist. */
export const EXIT_NOT_FOUND = 3;
/** No endpoint reachable, no leader, or no answer in time: try again later. */
export const EXIT_UNAVAILABLE = 4;
/** COMPARE_FAILED: the compare of `cas` did not hold; nothing was written. */
export const EXIT_COMPARE_FAILED = 5;
/** `lease keepalive` lost its lease: LEASE_NOT_FOUND, or no renewal acknowledged within its TTL. */
export const EXIT_LEASE_LOST = 6;
/**
 * LOCK_TIMEOUT: `aspen lock` did not get the lock within --timeout (the command was not run);
 * CAMPAIGN_TIMEOUT: `aspen elect` was not elected within --timeout.
 */
export const EXIT_LOCK_TIMEOUT = 7;

export const DEFAULT_ENDPOINTS = 'http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003';
const TIMEOUT_MS_DEFAULT = 10_000;
const UNAVAILABLE_CODES = new Set([
  'CONNECTION',
  'NO_LEADER',
  'NOT_LEADER',
  'NO_QUORUM',
  'TIMEOUT',
  'SHUTTING_DOWN',
  'OVERLOADED',
  'ABORTED',
]);
/** How often the progress line of a long call is redrawn on a terminal. */
const SPINNER_INTERVAL_MS = 1_000;
/** Commands that change the cluster: a failure that is not definite may still take effect. */
const MUTATING_COMMANDS = new Set([
  'put',
  'delete',
  'cas',
  'txn',
  'init',
  'add-learner',
  'change-membership',
  'member',
  'lease grant',
  'lease revoke',
  'lock',
  'elect',
]);

class UsageError extends Error {}

interface Globals {
  readonly endpoints: string;
  readonly json: boolean;
  readonly timeoutMs: string;
  readonly token?: string;
  readonly cacert?: string;
}

interface Context {
  readonly kv: KvClient;
  readonly json: boolean;
  /** --timeout-ms: the bound on the whole command. */
  readonly timeoutMs: number;
  /** --timeout-ms when given explicitly, else null. */
  readonly explicitTimeoutMs: number | null;
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Columns padded to their widest cell. */
function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function positiveInteger(text: string, what: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1)
    throw new UsageError(`${what} must be a positive integer, got "${text}"`);
  return value;
}

function nodeId(text: string): number {
  return positiveInteger(text, 'a node id');
}

function ttlSeconds(text: string): number {
  const value = positiveInteger(text, '--ttl');
  if (value < JOIN_TTL_SECONDS_MIN || value > JOIN_TTL_SECONDS_MAX)
    throw new UsageError(
      `--ttl must be in [${JOIN_TTL_SECONDS_MIN}, ${JOIN_TTL_SECONDS_MAX}] seconds, got ${value}`,
    );
  return value;
}

/** "4,5" (possibly empty: no learners at all). */
function idList(text: string, what: string): number[] {
  if (text.trim().length === 0) return [];
  return text.split(',').map((part) => positiveInteger(part.trim(), `${what}: a node id`));
}

/** `ID` or `ID=RAFT_ADDR`. */
function member(text: string): MemberSpec {
  const at = text.indexOf('=');
  if (at < 0) return { id: nodeId(text) };
  const raftAddr = text.slice(at + 1);
  if (raftAddr.length === 0) throw new UsageError(`"${text}": give ID or ID=RAFT_ADDR`);
  return { id: nodeId(text.slice(0, at)), raft_addr: raftAddr };
}

/** A progress line on stderr every SPINNER_INTERVAL_MS while `work` runs, only when stderr is a terminal. */
async function withSpinner<T>(label: string, work: Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return work;
  const frames = ['|', '/', '-', '\\'];
  const startedMs = Date.now();
  let frame = 0;
  const timer = setInterval(() => {
    frame += 1;
    process.stderr.write(
      `\r${frames[frame % frames.length] ?? ''} ${label} (${Math.round((Date.now() - startedMs) / 1_000)} s)`,
    );
  }, SPINNER_INTERVAL_MS);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  }
}

/** Resolves to nothing (exit EXIT_OK) or to the exit code (`lock` exits with its command's code). */
type Action = (
  context: Context,
  args: readonly string[],
  options: Readonly<Record<string, string | undefined>>,
) => Promise<unknown>;

const actions: Readonly<Record<string, Action>> = {
  put: async ({ kv, json }, [key = '', value], options) => {
    const lease = options.lease === undefined ? {} : { leaseId: leaseId(options.lease) };
    const result = await kv.put(
      key,
      value === undefined || value === '-' ? await stdinValue() : value,
      lease,
    );
    print(json ? JSON.stringify(result) : `OK (log index ${result.log_index})`);
  },
  get: async ({ kv, json }, [key = '']) => {
    const result = await kv.read(key);
    print(json ? JSON.stringify(result) : result.value);
  },
  delete: async ({ kv, json }, [key = '']) => {
    const result = await kv.delete(key);
    print(json ? JSON.stringify(result) : result.deleted ? 'deleted' : 'not found (nothing deleted)');
  },
  cas: async ({ kv, json }, args, options) => {
    const { key, expected, value } = casArguments(args, options.absent !== undefined);
    const outcome = await kv.cas(key, expected, value);
    if (outcome.succeeded) {
      print(json ? JSON.stringify(outcome) : `OK (revision ${outcome.revision})`);
      return;
    }
    // The current value on stdout (as `get` prints it; nothing when absent), the reason on stderr, exit 5.
    if (json) print(JSON.stringify(outcome));
    else if (outcome.current !== null) print(outcome.current.value);
    throw compareFailed(key, outcome.current);
  },
  txn: async ({ kv, json }, [file]) => {
    const txn = await readTransaction(file);
    const result = await kv.transaction(txn);
    print(json ? JSON.stringify(result) : txnText(txn, result, table));
  },
  scan: (context, [prefix = ''], options) => scan(context, prefix, options),
  status: (context) => status({ ...context, print, table }),
  health: (context) => health({ ...context, print, table }),
  leader: (context) => leader({ ...context, print, table }),
  members: async ({ kv, json }) => {
    const state = await kv.state();
    print(json ? JSON.stringify(state) : membersTable(state));
  },
  init: async ({ kv, json }, members) => {
    if (members.length === 0) throw new UsageError('init needs at least one member: ID or ID=RAFT_ADDR');
    const state = await kv.init(members.map(member));
    print(json ? JSON.stringify(state) : `initialized: voters ${state.members.join(', ')}`);
  },
  'add-learner': async ({ kv, json, explicitTimeoutMs }, [id = '', raftAddr]) => {
    const spec: MemberSpec =
      raftAddr === undefined ? { id: nodeId(id) } : { id: nodeId(id), raft_addr: raftAddr };
    const timeoutMs = explicitTimeoutMs ?? ADD_LEARNER_TIMEOUT_MS_DEFAULT;
    const state = await withSpinner(
      `waiting for learner ${id} to catch up`,
      kv.addLearner(spec, { timeoutMs, retry: { totalMsMax: timeoutMs } }),
    );
    print(
      json
        ? JSON.stringify(state)
        : `learner ${id} caught up; learners ${state.learners.map((node) => node.id).join(', ')}`,
    );
  },
  'change-membership': async ({ kv, json }, ids, options) => {
    if (ids.length === 0) throw new UsageError('change-membership needs the voter ids');
    const learners = options.learners === undefined ? undefined : idList(options.learners, '--learners');
    const state = await kv.changeMembership(ids.map(nodeId), learners === undefined ? {} : { learners });
    print(
      json
        ? JSON.stringify(state)
        : `voters ${state.members.join(', ')}; learners ${state.learners.map((node) => node.id).join(', ') || 'none'}`,
    );
  },
  member: async ({ kv, json }, [action = '', id = '']) => {
    if (action !== 'remove') throw new UsageError(`member takes "remove ID", got "${action}"`);
    const state = await kv.removeLearner(nodeId(id));
    print(
      json
        ? JSON.stringify(state)
        : `learner ${id} removed; learners ${state.learners.map((node) => node.id).join(', ') || 'none'}`,
    );
  },
  ticket: async ({ kv, json }, _args, options) => {
    if (options.nodeId === undefined) {
      if (options.ttl !== undefined) throw new UsageError('--ttl is for a join ticket: give --node-id too');
      const { ticket } = await kv.clusterTicket();
      print(json ? JSON.stringify({ ticket }) : ticket);
      return;
    }
    const ttl = options.ttl === undefined ? {} : { ttlSeconds: ttlSeconds(options.ttl) };
    const minted = await kv.joinTicket(nodeId(options.nodeId), ttl);
    print(json ? JSON.stringify(minted) : minted.ticket);
  },
  watch: (context, [key = ''], options) => watch(context, key, options),
  lock: (context, args, options) => lockAction({ ...context, print, table }, args, options),
  elect: (context, args, options) => electAction({ ...context, print, table }, args, options),
  ...Object.fromEntries(
    Object.entries(leaseActions).map(([name, action]): [string, Action] => [
      `lease ${name}`,
      (context, args, options) => action({ ...context, print, table }, args, options),
    ]),
  ),
  ...Object.fromEntries(
    Object.entries(backupActions).map(([name, action]): [string, Action] => [
      `backup ${name}`,
      (context, args) => action({ ...context, print }, args),
    ]),
  ),
};

/** The value of `aspen put KEY` (or `KEY -`): stdin, at most the largest value a node takes. */
async function stdinValue(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('aspen: reading the value from stdin (end with Ctrl-D)\n');
  const bound = `${VALUE_BYTES_MAX} bytes, the largest value a node stores`;
  return readBounded(process.stdin, 'the value on stdin', VALUE_BYTES_MAX, bound);
}

/** One line per event (JSON lines with --json) until SIGINT or SIGTERM; resumes by itself across nodes. */
async function watch(
  { kv, json }: Context,
  key: string,
  options: Readonly<Record<string, string | undefined>>,
): Promise<void> {
  const startRevision = options.rev === undefined ? undefined : positiveInteger(options.rev, '--rev');
  const stop = new AbortController();
  const onSignal = (): void => {
    stop.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const updates = kv.watch(key, {
      prefix: options.prefix !== undefined,
      signal: stop.signal,
      ...(startRevision === undefined ? {} : { startRevision }),
    });
    for await (const update of updates) printUpdate(update, json);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function printUpdate(update: WatchUpdate, json: boolean): void {
  for (const event of update.events) {
    if (json) print(JSON.stringify(event));
    else if (event.type === 'put') print(`${event.revision} PUT ${event.key} ${event.value}`);
    else print(`${event.revision} DELETE ${event.key}`);
  }
}

async function scan(
  { kv, json }: Context,
  prefix: string,
  options: Readonly<Record<string, string | undefined>>,
): Promise<void> {
  const limit = options.limit === undefined ? undefined : positiveInteger(options.limit, '--limit');
  const token = options.continuationToken ?? null;
  const result = await kv.scan({
    prefix,
    continuation_token: token,
    ...(limit === undefined ? {} : { limit }),
  });
  if (json) {
    print(JSON.stringify(result));
    return;
  }
  const more = result.is_truncated ? `\n… more: --continuation-token ${result.continuation_token ?? ''}` : '';
  print(
    table(
      ['KEY', 'VALUE'],
      result.entries.map((entry) => [entry.key, entry.value]),
    ) + more,
  );
}

function membersTable(state: ClusterState): string {
  const row = (node: ClusterNode, role: string) => [
    String(node.id),
    role,
    node.addr,
    node.raft_addr,
    node.peer_id ?? '-',
  ];
  const rows = [
    ...state.nodes.map((node) => row(node, node.id === state.leader ? 'leader' : 'voter')),
    ...state.learners.map((node) => row(node, 'learner')),
  ];
  return table(['ID', 'ROLE', 'ADDR', 'RAFT_ADDR', 'PEER_ID'], rows);
}

interface Chosen {
  readonly name: string;
  readonly args: string[];
  readonly options: Record<string, string | undefined>;
}

function program(choose: (chosen: Chosen) => void): Command {
  const root = new Command('aspen')
    .description(
      "Command-line client of an Aspen cluster (exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 unavailable, 5 compare failed, 6 lease lost, 7 lock or campaign timeout, 8 unhealthy; lock: its command's code)",
    )
    .version(ASPEN_VERSION, '--version', 'print the version and exit')
    .exitOverride()
    // Help goes out as commander writes it; its error messages are printed by parse() in our one-line form.
    .configureOutput({
      writeOut: (text) => {
        process.stdout.write(text);
      },
      writeErr: (text) => {
        process.stderr.write(text);
      },
      outputError: () => undefined,
    })
    .addOption(
      new Option(
        '--endpoints <endpoints>',
        'HTTP endpoints, comma-separated: host:port (http://, or https:// with --cacert) or URLs',
      )
        .env('ASPEN_ENDPOINTS')
        .default(DEFAULT_ENDPOINTS),
    )
    .addOption(new Option('--json', 'one JSON document on stdout, for scripts').default(false))
    .addOption(
      new Option('--token <token>', 'bearer token for nodes started with --auth-tokens').env('ASPEN_TOKEN'),
    )
    .addOption(
      new Option(
        '--cacert <file>',
        "PEM certificate of the CA that signed the nodes' TLS certificates (https:// endpoints); trusted instead of the system CAs",
      ).env('ASPEN_CACERT'),
    )
    .addOption(
      new Option('--timeout-ms <ms>', 'bound on the command, retries included').default(
        String(TIMEOUT_MS_DEFAULT),
      ),
    );
  const adder =
    (parent: Command, prefix: string): AddCommand =>
    (spec, description, extra) => {
      const name = prefix + (spec.split(' ')[0] ?? spec);
      let command = parent.command(spec).description(description);
      if (extra !== undefined) command = extra(command);
      command.action((...parameters: unknown[]) => {
        const options = parameters.at(-2) as Record<string, string | undefined>;
        const args = parameters
          .slice(0, -2)
          .flatMap((value) =>
            Array.isArray(value) ? (value as string[]) : typeof value === 'string' ? [value] : [],
          );
        choose({ name, args, options });
      });
    };
  addCommands(adder(root, ''));
  addClusterCommands(adder(root, ''));
  addLockCommand(adder(root, ''));
  addElectCommand(adder(root, ''));
  addLeaseCommands(
    adder(root.command('lease').description('leases: grant, keepalive, revoke, info, list'), 'lease '),
  );
  addBackupCommands(
    adder(root.command('backup').description('backups: save one from the cluster, check a file'), 'backup '),
  );
  return root;
}

/** Every command with its arguments, options and help text. */
function addCommands(add: AddCommand): void {
  add(
    'put <key> [value]',
    `write a key (linearizable, through the leader); the value from stdin when left out or "-" (at most ${VALUE_BYTES_MAX} bytes)`,
    (command) =>
      command.option('--lease <id>', 'attach the key to this lease (deleted when it expires or is revoked)'),
  );
  add('get <key>', 'read a key (linearizable); exit 3 when it does not exist');
  add('delete <key>', 'delete a key');
  add(
    'cas <key> <expected_or_new> [new]',
    'compare-and-swap: write NEW iff KEY holds EXPECTED; --absent KEY NEW: iff KEY does not exist. ' +
      'Prints the revision; on a failed compare prints the current value and exits 5',
    (command) =>
      command
        .summary('compare-and-swap: KEY EXPECTED NEW, or --absent KEY NEW; exit 5 when the compare fails')
        .usage('KEY EXPECTED NEW | --absent KEY NEW')
        .option('--absent', 'the compare is "KEY does not exist" (then give KEY NEW)'),
  );
  add(
    'txn [file]',
    `run a transaction {"compare":[…],"success":[…],"failure":[…]} read from FILE or stdin ("-"), ` +
      `at most ${TXN_INPUT_BYTES_MAX} bytes; exits 0 whether or not the compares held (see "succeeded")`,
    (command) =>
      command.summary('run a JSON transaction from FILE or stdin (exit 0 whether or not it succeeded)'),
  );
  add('scan [prefix]', 'list keys under a prefix, in order, one page', (command) =>
    command
      .option('--limit <n>', 'at most this many (1..10000, default 1000)')
      .option('--continuation-token <token>', 'the next page, as printed by the previous one'),
  );
  add('members', 'voters and learners with their addresses');
  add('init <members...>', 'initialize the cluster: ID or ID=RAFT_ADDR for each initial voter');
  add(
    'add-learner <id> [raft_addr]',
    'add a learner and wait until it caught up (raft_addr from discovery when left out)',
  );
  add(
    'change-membership <ids...>',
    'make exactly these nodes the voters (a learner must have caught up)',
    (command) =>
      command.option(
        '--learners <ids>',
        'and exactly these the learners, comma-separated ("" for none); others are removed',
      ),
  );
  add('member <action> <id>', '"member remove ID": take a learner out of the cluster');
  add(
    'ticket',
    'print a ticket for aspen-node --ticket: with --node-id, a join ticket (a single-use credential ' +
      'for that node id, made by the node asked, which hands the cookie over at the join); without, ' +
      'a cookie ticket (it carries the cluster cookie itself)',
    (command) =>
      command
        .summary('print a join ticket (--node-id N) or a cookie ticket for aspen-node --ticket')
        .option('--node-id <id>', 'a join ticket for this node id')
        .option(
          '--ttl <seconds>',
          `how long the join ticket stays valid (${JOIN_TTL_SECONDS_MIN}..${JOIN_TTL_SECONDS_MAX}, default ${JOIN_TTL_SECONDS_DEFAULT})`,
        ),
  );
  add(
    'watch <key>',
    'print each change of KEY (or, with --prefix, of every key under it) as it happens, one line per ' +
      'event ("REVISION PUT KEY VALUE" / "REVISION DELETE KEY", JSON lines with --json), resuming by ' +
      'itself on another endpoint; Ctrl-C stops it',
    (command) =>
      command
        .summary('stream the changes of a key or prefix until Ctrl-C')
        .option('--prefix', 'KEY is a prefix: watch every key under it ("" for all)')
        .option('--rev <n>', 'start at revision N (410 COMPACTED when the nodes no longer keep it)'),
  );
}

function exitCodeOf(error: unknown): number {
  if (error instanceof LeaseLostError) return EXIT_LEASE_LOST;
  if (error instanceof UsageError || error instanceof InputError) return EXIT_USAGE;
  if (!(error instanceof KvError)) return EXIT_FAILED;
  if (error.code === 'KEY_NOT_FOUND' || error.code === 'LEASE_NOT_FOUND') return EXIT_NOT_FOUND;
  if (error.code === 'COMPARE_FAILED') return EXIT_COMPARE_FAILED;
  if (error.code === 'LOCK_TIMEOUT' || error.code === 'CAMPAIGN_TIMEOUT') return EXIT_LOCK_TIMEOUT;
  return UNAVAILABLE_CODES.has(error.code) ? EXIT_UNAVAILABLE : EXIT_FAILED;
}

function context(root: Command): Context {
  const globals = root.opts<Globals>();
  const endpoints = endpointUrls(globals.endpoints, globals.cacert !== undefined);
  const timeoutMs = positiveInteger(globals.timeoutMs, '--timeout-ms');
  const explicit = root.getOptionValueSource('timeoutMs') !== 'default';
  const ca = globals.cacert === undefined ? undefined : readCacert(globals.cacert);
  try {
    // One bound for the whole command: each attempt and the retrying both end by --timeout-ms.
    const kv = new KvClient({
      endpoints,
      timeoutMs,
      retry: { totalMsMax: timeoutMs },
      ...(globals.token === undefined ? {} : { token: globals.token }),
      ...(ca === undefined ? {} : { ca }),
    });
    return { kv, json: globals.json, timeoutMs, explicitTimeoutMs: explicit ? timeoutMs : null };
  } catch (error) {
    // Never quote the token: name what was wrong with it.
    const text = String(error);
    const what =
      globals.token !== undefined && /token/.test(text)
        ? '--token'
        : ca !== undefined && /\bca:/.test(text)
          ? `--cacert ${globals.cacert ?? ''}`
          : '--endpoints';
    throw new UsageError(`${what}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Largest --cacert file read (a whole system CA bundle is about 200 KiB). */
export const CACERT_BYTES_MAX = 1024 * 1024;

/** The PEM text of --cacert, or a usage error naming the file. */
function readCacert(path: string): string {
  try {
    return readBoundedFile(path, '--cacert', CACERT_BYTES_MAX);
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(error.message);
    throw error;
  }
}

/** Parse argv; the chosen command, or the exit code when there is nothing to run (help, usage error). */
function parse(argv: readonly string[]): { root: Command; chosen: Chosen } | number {
  let chosen: Chosen | null = null;
  const root = program((picked) => {
    chosen = picked;
  });
  try {
    root.parse([...argv], { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    // --help exits 0; help shown for a missing command (on stderr) is a usage error.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT_OK;
    if (error.code === 'commander.help') return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    process.stderr.write(`aspen: USAGE: ${error.message.replace(/^error: /, '')} (aspen --help)\n`);
    return EXIT_USAGE;
  }
  const picked = chosen as Chosen | null;
  if (picked === null) {
    process.stderr.write('aspen: USAGE: a command is required (aspen --help)\n');
    return EXIT_USAGE;
  }
  return { root, chosen: picked };
}

/** Run the CLI on `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const parsed = parse(argv);
  if (typeof parsed === 'number') return parsed;
  const { root, chosen } = parsed;
  const action = actions[chosen.name];
  if (action === undefined) throw new Error(`no action for command ${chosen.name}`);
  let kv: KvClient | null = null;
  try {
    const ctx = context(root);
    kv = ctx.kv;
    const code = await action(ctx, chosen.args, chosen.options);
    return typeof code === 'number' ? code : EXIT_OK;
  } catch (error) {
    const usage = error instanceof UsageError || error instanceof InputError;
    const code =
      error instanceof KvError
        ? error.code
        : usage
          ? 'USAGE'
          : error instanceof LeaseLostError
            ? 'LEASE_LOST'
            : error instanceof BackupFormatError
              ? 'BAD_BACKUP'
              : 'ERROR';
    const inDoubt =
      error instanceof KvError && !error.definite && MUTATING_COMMANDS.has(chosen.name)
        ? ' (it may still take effect)'
        : '';
    const message = cliMessage(code, error instanceof Error ? error.message : String(error));
    process.stderr.write(`aspen: ${code}: ${message.replace(/\s+/g, ' ')}${inDoubt}\n`);
    return exitCodeOf(error);
  } finally {
    kv?.close();
  }
}

if (isMain(import.meta)) {
  process.exitCode = await main(process.argv.slice(2));
}
