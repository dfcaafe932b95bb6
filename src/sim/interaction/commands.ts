import type { MembershipConfig, NodeId } from '../../raft/types.ts';
import type { Command } from './datadriven.ts';
import { InteractionEnv, type MessageFilter } from './env.ts';
import { formatEntry, formatSnapshot, formatStatus } from './format.ts';

/** Delivery rounds `stabilize` may run before it fails (a livelock is a failure of the script). */
export const STABILIZE_ROUNDS_MAX = 200;
/** Ticks one command may give a node. */
export const TICKS_PER_COMMAND_MAX = 10_000;

type Handler = (env: InteractionEnv, command: Command, out: string[]) => void;

function integer(text: string | undefined, what: string): number {
  const value = Number(text);
  if (text === undefined || !Number.isSafeInteger(value) || value < 0)
    throw new Error(`${what}: expected a non-negative integer, got ${text ?? 'nothing'}`);
  return value;
}

/** `(1,2,3)` or `()`. */
function idList(text: string | undefined, what: string): NodeId[] {
  if (text === undefined) return [];
  if (!text.startsWith('(') || !text.endsWith(')'))
    throw new Error(`${what}: expected (1,2,...), got ${text}`);
  const inner = text.slice(1, -1);
  return inner === '' ? [] : inner.split(',').map((part) => integer(part, what));
}

function nodeArgument(command: Command): NodeId {
  return integer(command.positional[0], `${command.name}: node id`);
}

function filterOf(command: Command): MessageFilter {
  const from = command.named.get('from');
  const to = command.named.get('to');
  const type = command.named.get('type');
  return {
    ...(from === undefined ? {} : { from: integer(from, 'from') }),
    ...(to === undefined ? {} : { to: integer(to, 'to') }),
    ...(type === undefined ? {} : { type }),
  };
}

/** `add-nodes N [voters=(..)] [learners=(..)]`: with voters, the new nodes are bootstrapped members. */
function addNodes(env: InteractionEnv, command: Command, out: string[]): void {
  const count = integer(command.positional[0], 'add-nodes: count');
  const voters = idList(command.named.get('voters'), 'voters');
  const learners = idList(command.named.get('learners'), 'learners');
  const config: MembershipConfig | null =
    voters.length === 0 ? null : { voters, votersOutgoing: [], learners };
  const first = env.nodes.size + 1;
  for (let id = first; id < first + count; id += 1) {
    env.addNode(id, config);
    const disk = env.node(id).disk;
    out.push(
      `${id} added: ${disk.snapshot === null ? 'empty' : `snapshot ${formatSnapshot(disk.snapshot)}`}`,
    );
  }
}

/** `campaign ID`: step a local hup (etcd's MsgHup), as the election timer does when it fires. */
function campaign(env: InteractionEnv, command: Command, out: string[]): void {
  const node = env.node(nodeArgument(command));
  node.core.step({ type: 'hup' });
  env.announce(node, out);
}

/** `tick ID [COUNT]`. */
function tick(env: InteractionEnv, command: Command, out: string[]): void {
  const node = env.node(nodeArgument(command));
  const count = command.positional[1] === undefined ? 1 : integer(command.positional[1], 'tick count');
  if (count > TICKS_PER_COMMAND_MAX) throw new Error(`at most ${TICKS_PER_COMMAND_MAX} ticks`);
  for (let index = 0; index < count; index += 1) node.core.tick();
  env.announce(node, out);
}

/** `propose ID DATA`. */
function propose(env: InteractionEnv, command: Command, out: string[]): void {
  const data = command.positional[1] ?? '';
  out.push(
    InteractionEnv.outcome(env.node(nodeArgument(command)).core.propose(new TextEncoder().encode(data))),
  );
}

/** `propose-membership ID voters=(..) [learners=(..)]`. */
function proposeMembership(env: InteractionEnv, command: Command, out: string[]): void {
  const voters = idList(command.named.get('voters'), 'voters');
  const learners = idList(command.named.get('learners'), 'learners');
  out.push(
    InteractionEnv.outcome(env.node(nodeArgument(command)).core.proposeMembership({ voters, learners })),
  );
}

/** `transfer from=ID to=ID`: leadership transfer. */
function transfer(env: InteractionEnv, command: Command, out: string[]): void {
  const from = env.node(integer(command.named.get('from'), 'transfer: from'));
  out.push(
    InteractionEnv.outcome(from.core.transferLeadership(integer(command.named.get('to'), 'transfer: to'))),
  );
}

function allIds(env: InteractionEnv): NodeId[] {
  return [...env.nodes.keys()].sort((a, b) => a - b);
}

/** `process-ready [ID...]`: every node when none is named. */
function processReady(env: InteractionEnv, command: Command, out: string[]): void {
  const ids = command.positional.map((text) => integer(text, 'process-ready: node id'));
  env.processReady(ids.length === 0 ? allIds(env) : ids, out);
}

/** `deliver-msgs [from=ID] [to=ID] [type=TYPE]`: deliver what is queued and matches, in order. */
function deliverMessages(env: InteractionEnv, command: Command, out: string[]): void {
  env.deliver(filterOf(command), false, out);
}

/** `drop [from=ID] [to=ID] [type=TYPE]`: lose what is queued and matches. */
function drop(env: InteractionEnv, command: Command, out: string[]): void {
  env.deliver(filterOf(command), true, out);
}

/** `stabilize`: handle Readies and deliver messages until neither is left. */
function stabilize(env: InteractionEnv, _command: Command, out: string[]): void {
  for (let round = 0; round < STABILIZE_ROUNDS_MAX; round += 1) {
    const readied = env.processReady(allIds(env), out);
    const delivered = env.deliver({}, false, out);
    if (!readied && delivered === 0) return;
  }
  throw new Error(`no quiet state within ${STABILIZE_ROUNDS_MAX} rounds`);
}

function status(env: InteractionEnv, command: Command, out: string[]): void {
  out.push(...formatStatus(env.node(nodeArgument(command)).core.status()));
}

/** `raft-log ID`: what the node has on disk. */
function raftLog(env: InteractionEnv, command: Command, out: string[]): void {
  const disk = env.node(nodeArgument(command)).disk;
  const { term, vote, commit } = disk.hardState;
  out.push(`hard state term ${term} vote ${vote} commit ${commit}`);
  if (disk.snapshot !== null) out.push(`snapshot ${formatSnapshot(disk.snapshot)}`);
  for (const entry of disk.entries) out.push(formatEntry(entry));
}

/** `partition (1) (2,3)`: cut every link between the sides (messages are lost at delivery). */
function partition(env: InteractionEnv, command: Command): void {
  env.partition(command.positional.map((text) => idList(text, 'partition side')));
}

function heal(env: InteractionEnv): void {
  env.heal();
}

/** `restart ID`: a crash (nothing unsynced to lose) and a restart from the disk. */
function restart(env: InteractionEnv, command: Command, out: string[]): void {
  const id = nodeArgument(command);
  env.restart(id);
  env.announce(env.node(id), out);
}

export const COMMANDS: Readonly<Record<string, Handler>> = {
  'add-nodes': addNodes,
  campaign,
  tick,
  propose,
  'propose-membership': proposeMembership,
  transfer,
  'process-ready': processReady,
  'deliver-msgs': deliverMessages,
  drop,
  stabilize,
  status,
  'raft-log': raftLog,
  partition,
  heal,
  restart,
};

/** Run one command of a script; returns its output lines. */
export function runCommand(env: InteractionEnv, command: Command): string[] {
  const handler = COMMANDS[command.name];
  if (handler === undefined)
    throw new Error(`unknown command ${command.name}; known: ${Object.keys(COMMANDS).join(', ')}`);
  const out: string[] = [];
  handler(env, command, out);
  return out;
}
