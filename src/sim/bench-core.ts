import { scriptOptions } from '../base/script-args.ts';
import { assert } from '../base/assert.ts';
import { defaultRaftConfig } from '../raft/config.ts';
import { RaftCore } from '../raft/core.ts';
import { SeededPrng } from '../raft/prng.ts';
import { runReady, type ReadyExecutor } from '../raft/ready-loop.ts';
import { EMPTY_HARD_STATE, type Message, type NodeId } from '../raft/types.ts';

/**
 * Micro-benchmark of the Raft core alone: no I/O, instant "disk" and network. Reports committed
 * entries per second of CPU for a cluster, so regressions in the core show apart from I/O.
 */
const PROPOSALS_PER_ROUND = 64;
const ROUNDS_MAX = 1_000_000;
const PAYLOAD = new Uint8Array(128);

function benchmark(nodeCount: number, entriesTarget: number): { entriesPerCpuSecond: number; cpuMs: number } {
  const cores = new Map<NodeId, RaftCore>();
  for (let id = 1; id <= nodeCount; id += 1) {
    cores.set(
      id,
      new RaftCore(defaultRaftConfig(id), new SeededPrng(id), { hardState: EMPTY_HARD_STATE, entries: [] }),
    );
  }
  const leader = cores.get(1);
  assert(leader !== undefined, 'node 1 exists');
  const voters = [...cores.keys()];
  assert(leader.init({ voters, votersOutgoing: [], learners: [] }).ok, 'init');
  const started = process.cpuUsage();
  let queue: Message[] = [];
  // An instant disk and network: the messages join the next delivery round.
  const executor: ReadyExecutor = {
    persist: (_ready, done) => {
      done();
    },
    send: (_ready, messages) => {
      for (const message of messages) queue.push(message);
    },
    apply: () => true,
    answerReads: () => undefined,
    advanced: () => undefined,
  };
  let rounds = 0;
  while (leader.status().commitIndex < entriesTarget && rounds < ROUNDS_MAX) {
    rounds += 1;
    if (leader.status().role === 'leader') {
      for (let count = 0; count < PROPOSALS_PER_ROUND; count += 1) leader.propose(PAYLOAD);
    }
    for (const core of cores.values()) {
      if (core.hasReady()) runReady(core, executor);
    }
    const delivering = queue;
    queue = [];
    for (const message of delivering) cores.get(message.to)?.step(message);
  }
  const usage = process.cpuUsage(started);
  const cpuMs = (usage.user + usage.system) / 1000;
  return {
    entriesPerCpuSecond: Math.round(leader.status().commitIndex / (cpuMs / 1000)),
    cpuMs: Math.round(cpuMs),
  };
}

const USAGE = `usage: npm run bench:core -- [--entries N]   entries replicated per run (default 200000), 3 and 5 nodes
`;
const values = scriptOptions('bench:core', USAGE, { entries: { type: 'string', default: '200000' } });
const entries = Number(values.entries);
for (const nodeCount of [3, 5]) {
  benchmark(nodeCount, 20_000); // warm-up
  const result = benchmark(nodeCount, entries);
  process.stdout.write(`${JSON.stringify({ bench: 'raft-core', nodes: nodeCount, entries, ...result })}\n`);
}
