#!/usr/bin/env node
/**
 * aspen: the command-line client. `aspen put greeting hello`, `aspen get greeting`, `aspen status`.
 * Endpoints from --endpoints or ASPEN_ENDPOINTS; tables by default, --json for scripts.
 */
import { Command, CommanderError, Option } from 'commander';
import { KvClient, type MemberSpec } from '../client/kv-client.ts';
import { KvError } from '../client/errors.ts';

export const EXIT_OK = 0;
/** The cluster answered with an error (bad input, already initialized, …). */
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
/** `get` of a key that does not exist. */
export const EXIT_NOT_FOUND = 3;
/** No endpoint reachable, no leader, or no answer in time: try again later. */
export const EXIT_UNAVAILABLE = 4;

const DEFAULT_ENDPOINTS = 'http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003';
const UNAVAILABLE_CODES = new Set(['CONNECTION', 'NO_LEADER', 'NO_QUORUM', 'TIMEOUT', 'SHUTTING_DOWN', 'OVERLOADED']);
/** How often the progress line of a long call is redrawn on a terminal. */
const SPINNER_INTERVAL_MS = 200;

class UsageError extends Error {}

interface Globals {
  readonly endpoints: string;
  readonly json: boolean;
  readonly timeoutMs: string;
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Columns padded to their widest cell. */
function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function nodeId(text: string): number {
  const id = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(id) || id < 1) throw new UsageError(`node ids are positive integers, got "${text}"`);
  return id;
}

/** `ID` or `ID=RAFT_ADDR`. */
function member(text: string): MemberSpec {
  const at = text.indexOf('=');
  if (at < 0) return { id: nodeId(text) };
  return { id: nodeId(text.slice(0, at)), raft_addr: text.slice(at + 1) };
}

/** A progress line on a terminal while `work` runs (nothing when stderr is not a TTY). */
async function withSpinner<T>(label: string, work: Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return work;
  const frames = ['|', '/', '-', '\\'];
  const startedMs = Date.now();
  let frame = 0;
  const timer = setInterval(() => {
    frame += 1;
    process.stderr.write(`\r${frames[frame % frames.length] ?? ''} ${label} (${Math.floor((Date.now() - startedMs) / 1_000)} s)`);
  }, SPINNER_INTERVAL_MS);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  }
}

function client(globals: Globals): KvClient {
  const endpoints = globals.endpoints.split(',').map((endpoint) => endpoint.trim()).filter((endpoint) => endpoint.length > 0);
  const timeoutMs = Number(globals.timeoutMs);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`--timeout-ms must be a positive integer, got "${globals.timeoutMs}"`);
  try {
    return new KvClient({ endpoints, timeoutMs, retry: { totalMsMax: timeoutMs } });
  } catch (error) {
    throw new UsageError(`--endpoints: ${error instanceof Error ? error.message : String(error)}`);
  }
}

type Action = (kv: KvClient, globals: Globals, args: readonly string[], options: Record<string, string | undefined>) => Promise<void>;

const actions: Record<string, Action> = {
  put: async (kv, globals, [key = '', value = '']) => {
    const result = await kv.put(key, value);
    print(globals.json ? JSON.stringify(result) : `OK (log index ${result.log_index})`);
  },
  get: async (kv, globals, [key = '']) => {
    const result = await kv.read(key);
    print(globals.json ? JSON.stringify(result) : result.value);
  },
  delete: async (kv, globals, [key = '']) => {
    const result = await kv.delete(key);
    print(globals.json ? JSON.stringify(result) : result.deleted ? 'deleted' : 'not found (nothing deleted)');
  },
  scan: async (kv, globals, [prefix = ''], options) => {
    const limit = options.limit === undefined ? undefined : Number(options.limit);
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) throw new UsageError(`--limit must be a positive integer, got "${options.limit ?? ''}"`);
    const result = await kv.scan({ prefix, ...(limit === undefined ? {} : { limit }) });
    if (globals.json) print(JSON.stringify(result));
    else print(table(['KEY', 'VALUE'], result.entries.map((entry) => [entry.key, entry.value])) + (result.is_truncated ? `\n… more (continuation_token ${result.continuation_token ?? ''})` : ''));
  },
  status: (kv, globals) => status(kv, globals),
  members: async (kv, globals) => {
    const state = await kv.state();
    if (globals.json) {
      print(JSON.stringify(state));
      return;
    }
    const rows = [
      ...state.nodes.map((node) => [String(node.id), node.id === state.leader ? 'leader' : 'voter', node.addr, node.raft_addr]),
      ...state.learners.map((node) => [String(node.id), 'learner', node.addr, node.raft_addr]),
    ];
    print(table(['ID', 'ROLE', 'ADDR', 'RAFT_ADDR'], rows));
  },
  init: async (kv, globals, members) => {
    if (members.length === 0) throw new UsageError('init needs at least one member: ID or ID=RAFT_ADDR');
    const state = await kv.init(members.map(member));
    print(globals.json ? JSON.stringify(state) : `initialized: voters ${state.members.join(', ')}`);
  },
  'add-learner': async (kv, globals, [id = '', raftAddr]) => {
    const spec: MemberSpec = raftAddr === undefined ? { id: nodeId(id) } : { id: nodeId(id), raft_addr: raftAddr };
    const state = await withSpinner(`waiting for learner ${id} to catch up`, kv.addLearner(spec));
    print(globals.json ? JSON.stringify(state) : `learner ${id} caught up; learners ${state.learners.map((node) => node.id).join(', ')}`);
  },
  'change-membership': async (kv, globals, ids) => {
    if (ids.length === 0) throw new UsageError('change-membership needs the voter ids');
    const state = await kv.changeMembership(ids.map(nodeId));
    print(globals.json ? JSON.stringify(state) : `voters ${state.members.join(', ')}`);
  },
  ticket: async (kv, globals) => {
    const { ticket } = await kv.clusterTicket();
    print(globals.json ? JSON.stringify({ ticket }) : ticket);
  },
};

async function status(kv: KvClient, globals: Globals): Promise<void> {
  const rows = await Promise.all(kv.endpointList.map(async (endpoint) => {
    try {
      return { endpoint, metrics: await kv.metrics(endpoint), error: null };
    } catch (error) {
      return { endpoint, metrics: null, error: error instanceof KvError ? error.code : String(error) };
    }
  }));
  if (globals.json) {
    print(JSON.stringify(rows));
  } else {
    print(table(['ENDPOINT', 'NODE', 'STATE', 'TERM', 'LEADER', 'LAST_LOG', 'COMMIT', 'APPLIED'], rows.map(({ endpoint, metrics, error }) => (metrics === null
      ? [endpoint, '-', `unreachable (${error})`, '', '', '', '', '']
      : [endpoint, String(metrics.node_id), metrics.state, String(metrics.current_term), String(metrics.current_leader ?? '-'),
        String(metrics.last_log_index), String(metrics.commit_index), String(metrics.last_applied)]))));
  }
  if (rows.every((row) => row.metrics === null)) throw new KvError('CONNECTION', 'no endpoint answered', { definite: true });
}

interface Chosen {
  readonly name: string;
  readonly args: string[];
  readonly options: Record<string, string | undefined>;
}

function program(choose: (chosen: Chosen) => void): Command {
  const root = new Command('aspen')
    .description('Command-line client of an Aspen cluster')
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: (text) => { process.stdout.write(text); } })
    .addOption(new Option('--endpoints <urls>', 'HTTP endpoints, comma-separated').env('ASPEN_ENDPOINTS').default(DEFAULT_ENDPOINTS))
    .addOption(new Option('--json', 'one JSON document on stdout, for scripts').default(false))
    .addOption(new Option('--timeout-ms <ms>', 'bound on each command, retries included').default('10000'));
  const add = (spec: string, description: string, extra?: (command: Command) => Command): void => {
    const name = spec.split(' ')[0] ?? spec;
    let command = root.command(spec).description(description);
    if (extra !== undefined) command = extra(command);
    command.action((...parameters: unknown[]) => {
      const options = parameters.at(-2) as Record<string, string | undefined>;
      const args = parameters.slice(0, -2).flatMap((value) => (Array.isArray(value) ? (value as string[]) : typeof value === 'string' ? [value] : []));
      choose({ name, args, options });
    });
  };
  add('put <key> <value>', 'write a key (linearizable, through the leader)');
  add('get <key>', 'read a key (linearizable); exit 3 when it does not exist');
  add('delete <key>', 'delete a key');
  add('scan [prefix]', 'list keys under a prefix, in order', (command) => command.option('--limit <n>', 'at most this many (1..10000)'));
  add('status', 'role, term, leader and log positions of every endpoint');
  add('members', 'voters and learners with their addresses');
  add('init <members...>', 'initialize the cluster: ID or ID=RAFT_ADDR for each initial voter');
  add('add-learner <id> [raft_addr]', 'add a learner and wait until it caught up (raft_addr from discovery when left out)');
  add('change-membership <ids...>', 'make exactly these nodes the voters');
  add('ticket', 'print a cluster ticket for aspen-node --ticket');
  return root;
}

function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError) return EXIT_USAGE;
  if (!(error instanceof KvError)) return EXIT_FAILED;
  if (error.code === 'KEY_NOT_FOUND') return EXIT_NOT_FOUND;
  return UNAVAILABLE_CODES.has(error.code) ? EXIT_UNAVAILABLE : EXIT_FAILED;
}

/** Run the CLI on `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let chosen: Chosen | null = null;
  const root = program((picked) => { chosen = picked; });
  try {
    root.parse([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return EXIT_OK;
      process.stderr.write(`aspen: ${error.message.replace(/^error: /, '')} (aspen --help)\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
  const picked = chosen as Chosen | null;
  if (picked === null) {
    process.stderr.write('aspen: a command is required (aspen --help)\n');
    return EXIT_USAGE;
  }
  const action = actions[picked.name];
  if (action === undefined) return EXIT_USAGE;
  let kv: KvClient | null = null;
  try {
    kv = client(root.opts<Globals>());
    await action(kv, root.opts<Globals>(), picked.args, picked.options);
    return EXIT_OK;
  } catch (error) {
    const code = error instanceof KvError ? error.code : error instanceof UsageError ? 'USAGE' : 'ERROR';
    process.stderr.write(`aspen: ${code}: ${error instanceof Error ? error.message : String(error)}\n`);
    return exitCodeOf(error);
  } finally {
    kv?.close();
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
