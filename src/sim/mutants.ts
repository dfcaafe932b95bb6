import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { scriptOptions } from '../base/script-args.ts';

/**
 * Mutation checks for the simulator: each mutant is a deliberate bug applied to a copy of src/.
 * The simulator must fail on it within the seed budget, or the simulator is too weak.
 */
export interface Mutant {
  readonly name: string;
  readonly file: string;
  readonly original: string;
  readonly replacement: string;
}

export const MUTANTS: readonly Mutant[] = [
  {
    name: 'vote granted without the log up-to-date check',
    file: 'src/raft/elections.ts',
    original: 'if (canVote && this.log.isUpToDate(message.lastLogIndex, message.lastLogTerm)) {',
    replacement: 'if (canVote) {',
  },
  {
    name: 'messages sent before the batch they depend on is synced',
    file: 'src/raft/ready.ts',
    original: "  const sendEarly = !mustSync || (draft.softState.role === 'leader' && !termOrVoteMoved);",
    replacement: '  const sendEarly = true;',
  },
  {
    name: 'a leader sends before its new term and vote are synced',
    file: 'src/raft/ready.ts',
    original: "  const sendEarly = !mustSync || (draft.softState.role === 'leader' && !termOrVoteMoved);",
    replacement: "  const sendEarly = !mustSync || draft.softState.role === 'leader';",
  },
  {
    name: 'ReadIndex served without confirming leadership',
    file: 'src/raft/read-only.ts',
    original: '      if (read.round > confirmedRound) break;',
    replacement: '      if (read.round > confirmedRound + 1_000_000) break;',
  },
  {
    name: 'heartbeat carries the leader commit index instead of min(match, commit)',
    file: 'src/raft/replication.ts',
    original: '      const commitIndex = Math.min(progress.match, this.log.committed);',
    replacement: '      const commitIndex = this.log.committed;',
  },
  {
    name: 'a learner promoted without having caught up (or ever answered)',
    file: 'src/raft/core.ts',
    original: '    if (lagging !== null) return rejected(lagging);',
    replacement: '    if (lagging !== null && lagging.nodeId < 0) return rejected(lagging);',
  },
  {
    name: 'joint quorum counts only the new majority',
    file: 'src/raft/quorum.ts',
    original:
      '  return Math.min(majorityAckedIndex(config.voters, acked), majorityAckedIndex(config.votersOutgoing, acked));',
    replacement: '  return majorityAckedIndex(config.voters, acked);',
  },
  {
    name: 'a version compare evaluated against the revision before the last change',
    file: 'src/node/kv-state-machine.ts',
    original: "  if (target === 'version') return record.version;",
    replacement: "  if (target === 'version') return record.version - 1;",
  },
  {
    name: 'a retried sequence applied again',
    file: 'src/node/session-apply.ts',
    original: '    return { ...first, duplicate: true };',
    replacement: '    return applyCommand(store, index, proposal.command, term);',
  },
  {
    name: 'followers track lease deadlines from the grant and keep them when they become leader',
    file: 'src/node/lease-keeper.ts',
    original: '      trackWhileInactive: mutations.lessorOnFollowers === true,',
    replacement: '      trackWhileInactive: true,',
  },
  {
    name: 'a leader keeps its old lease deadlines across losing and regaining leadership',
    file: 'src/node/lease-keeper.ts',
    original: '      keepDeadlines: mutations.lessorKeepsDeadlines === true,',
    replacement: '      keepDeadlines: true,',
  },
  {
    name: 'a watcher whose consumer is not ready skips the revision it could not send',
    file: 'src/node/watch-hub.ts',
    original: "        if (!watcher.sink.ready()) return 'blocked';",
    replacement:
      "        if (!watcher.sink.ready()) {\n          watcher.cursor = entry.revision + 1;\n          return 'blocked';\n        }",
  },
  {
    name: 'a lock granted when the key ahead is deleted, without the owner re-check',
    file: 'src/node/owner-queue.ts',
    original: "      if (end === 'timeout') throw timeout('timed out');",
    replacement:
      "      if (end === 'gone') return;\n      if (end === 'timeout') throw timeout('timed out');",
  },
  {
    name: 'a proclaim by a candidate that is not the leader',
    file: 'src/node/election-service.ts',
    original: '    if (leader?.key !== key)',
    replacement: '    if (leader === null)',
  },
  {
    name: "an observer not told when the leader's value changes",
    file: 'src/node/election-service.ts',
    original: '        first.value === before.value);',
    replacement: '        true);',
  },
  // Snapshot files (issue 21): seeds in file mode stream, install and restore them (sim-snapshot-files.ts).
  {
    name: 'snapshot file: a received chunk counted again when duplicated (no offset dedup)',
    file: 'src/node/snapshot-manager.ts',
    original: '    if (receipt.finishing || receipt.offsets.has(chunk.offsetBytes)) return;',
    replacement: '    if (receipt.finishing) return;',
  },
  {
    name: 'snapshot file: the log compacted to the applied index, not to the index the copy holds',
    file: 'src/node/raft-node.ts',
    original:
      '    this.persistSnapshot({ meta: this.core.compact(copied.index), data: null }, copied.waiting);',
    replacement:
      '    this.persistSnapshot({ meta: this.core.compact(this.core.log.applied), data: null }, copied.waiting);',
  },
  {
    name: 'snapshot file: a received file installed before its mark is durable',
    file: 'src/node/ready-executor.ts',
    original:
      '    const batch: PersistBatch = { snapshot, hardState: ready.hardState, entries: ready.entries };',
    replacement:
      '    const batch: PersistBatch = { snapshot, hardState: ready.hardState, entries: ready.entries };\n' +
      '    if (snapshot !== null && snapshot.data === null) this.installSnapshotFile(snapshot, () => undefined);',
  },
  {
    name: 'snapshot file: a received file stepped into the core before it is synced',
    file: 'src/node/snapshot-manager.ts',
    original: '    receipt.finishing = true;',
    replacement:
      '    receipt.finishing = true;\n' +
      '    this.received = { meta: receipt.meta, data: null };\n' +
      '    this.options.received(installMessage(chunk));',
  },
  {
    name: 'snapshot file: a mark deletes the newer files too (a received one waiting for the core)',
    file: 'src/storage/snapshot-retention.ts',
    original: '  return indexes.filter((index) => index < marked);',
    replacement: '  return indexes.filter((index) => index !== marked);',
  },
];

export interface MutantResult {
  readonly mutant: Mutant;
  readonly caught: boolean;
  readonly exitCode: number | null;
  readonly firstFailure: string;
}

const ROOT = resolve(import.meta.dirname, '..', '..');
export const MUTANT_TIMEOUT_MS = 300_000;

export function runMutant(mutant: Mutant, seeds: number): MutantResult {
  const workspace = mkdtempSync(join(tmpdir(), 'aspen-mutant-'));
  try {
    cpSync(join(ROOT, 'src'), join(workspace, 'src'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(workspace, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(workspace, 'node_modules'), 'dir');
    const path = join(workspace, mutant.file);
    const source = readFileSync(path, 'utf8');
    const occurrences = source.split(mutant.original).length - 1;
    if (occurrences !== 1)
      throw new Error(
        `mutant "${mutant.name}": expected its target once in ${mutant.file}, found ${occurrences}`,
      );
    writeFileSync(path, source.replace(mutant.original, mutant.replacement));
    const run = spawnSync(process.execPath, [join(workspace, 'src/sim/cli.ts'), '--seeds', String(seeds)], {
      encoding: 'utf8',
      timeout: MUTANT_TIMEOUT_MS,
    });
    const failure = /SEED (\d+) FAILED: (\w+)\n(.*)/.exec(run.stderr);
    return {
      mutant,
      caught: run.status !== 0 && failure !== null,
      exitCode: run.status,
      firstFailure:
        failure === null
          ? (run.stderr.split('\n')[0] ?? '')
          : `seed ${failure[1]} (${failure[2]}): ${failure[3]}`,
    };
  } finally {
    rmSync(workspace, { recursive: true, force: true });
  }
}

const MUTANTS_USAGE = `usage: npm run sim:mutants -- [options]   (docs/simulation.md, "Mutation checks")
  --seeds N      seeds the simulator runs against each mutant (default 1000)
  --only TEXT    only the mutants whose name contains TEXT (e.g. lease)
  -h, --help     this text
exit codes: 0 every mutant caught, 1 one was missed
`;

function main(): void {
  const values = scriptOptions('sim:mutants', MUTANTS_USAGE, {
    seeds: { type: 'string', default: '1000' },
    only: { type: 'string', default: '' },
  });
  const seeds = Number(values.seeds);
  let missed = 0;
  // --only TEXT: the mutants whose name contains TEXT (one family at a time, e.g. "lease").
  for (const mutant of MUTANTS.filter((candidate) => candidate.name.includes(values.only))) {
    const result = runMutant(mutant, seeds);
    if (!result.caught) missed += 1;
    process.stdout.write(`${result.caught ? 'caught' : 'MISSED'}  ${mutant.name}: ${result.firstFailure}\n`);
  }
  process.exit(missed === 0 ? 0 : 1);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) main();
