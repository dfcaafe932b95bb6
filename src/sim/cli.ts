import { scriptOptions } from '../base/script-args.ts';
import { EXIT_CODE, type SimResult } from './outcome.ts';
import { describeSettings, drawSettings } from './settings.ts';
import { Simulation } from './simulation.ts';

const SEEDS_MAX = 10_000_000;

function parsePositiveInteger(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    process.stderr.write(`sim: --${what} must be a non-negative integer, got ${text}\n`);
    process.exit(EXIT_CODE.usage);
  }
  return value;
}

function printFailure(result: SimResult): void {
  const out = process.stderr;
  // The first two lines are parsed by src/sim/mutants.ts: keep their format.
  out.write(`\nSEED ${result.seed} FAILED: ${result.status}\n${result.message}\n`);
  out.write(`exit code: ${EXIT_CODE[result.status]} (${result.status})\n`);
  out.write(`settings: ${JSON.stringify(result.settings)}\n`);
  out.write(`stats: ${JSON.stringify(result.stats)}\n`);
  out.write(`last events:\n${result.trace.map((line) => `  ${line}`).join('\n')}\n`);
  out.write(`replay: npm run sim -- --seed ${result.seed}\n`);
}

const USAGE = `usage: npm run sim -- [options]   (docs/simulation.md)
  --seeds N        run N seeds (default 100, at most ${SEEDS_MAX})
  --first-seed S   starting at seed S (default 1)
  --seed S         replay seed S alone: every setting first, then its stats
  --keep-going     run every seed, listing each failure (default: stop at the first)
  --verbose        one stats line per seed
  -h, --help       this text
exit codes: ${EXIT_CODE.ok} ok, ${EXIT_CODE.crash} crash, ${EXIT_CODE.liveness} liveness, ${EXIT_CODE.correctness} correctness, ${EXIT_CODE.usage} usage
`;

async function main(): Promise<void> {
  const values = scriptOptions('sim', USAGE, {
    seed: { type: 'string' },
    seeds: { type: 'string' },
    'first-seed': { type: 'string' },
    verbose: { type: 'boolean', default: false },
    'keep-going': { type: 'boolean', default: false },
  });
  const single = values.seed !== undefined;
  const firstSeed = single
    ? parsePositiveInteger(values.seed, 0, 'seed')
    : parsePositiveInteger(values['first-seed'], 1, 'first-seed');
  const count = single ? 1 : parsePositiveInteger(values.seeds, 100, 'seeds');
  if (count < 1 || count > SEEDS_MAX) {
    process.stderr.write(`sim: --seeds must be in [1, ${SEEDS_MAX}]\n`);
    process.exit(EXIT_CODE.usage);
  }
  const started = performance.now();
  const failures: SimResult[] = [];
  const totals = {
    events: 0,
    committed: 0,
    ops: 0,
    conditional: 0,
    conditionalSucceeded: 0,
    retries: 0,
    retriesAnswered: 0,
    sessionsExpired: 0,
    duplicateAnswers: 0,
    undecided: 0,
    crashes: 0,
    partitions: 0,
    membershipChanges: 0,
    snapshotsInstalled: 0,
    readsDuringNewerLeader: 0,
    tornWrites: 0,
    fileSeeds: 0,
    fileSnapshotsInstalled: 0,
    fileSnapshotsRestored: 0,
    installCrashes: 0,
    leaseGrants: 0,
    leaseExpiries: 0,
    leaseKeepAlivesAcked: 0,
    watchEvents: 0,
    watchResumes: 0,
    watchCanceled: 0,
    lockCalls: 0,
    lockGrants: 0,
    fencedWrites: 0,
    campaigns: 0,
    proclaims: 0,
    observations: 0,
  };
  for (let seed = firstSeed; seed < firstSeed + count; seed += 1) {
    const settings = drawSettings(seed);
    // A replay prints every setting first, so that a run that hangs or crashes can still be read.
    if (single) process.stdout.write(`${describeSettings(settings).join('\n')}\n`);
    const result = await new Simulation(settings).run();
    totals.events += result.stats.events;
    totals.committed += result.stats.committedEntries;
    totals.ops += result.stats.opsOk;
    totals.conditional += result.stats.opsConditional;
    totals.conditionalSucceeded += result.stats.opsConditionalSucceeded;
    totals.retries += result.stats.writeRetries;
    totals.retriesAnswered += result.stats.retriesAnswered;
    totals.sessionsExpired += result.stats.sessionsExpired;
    totals.duplicateAnswers += result.stats.duplicateAnswers;
    totals.undecided += result.stats.historyUndecided;
    totals.crashes += result.stats.crashes;
    totals.partitions += result.stats.partitions;
    totals.membershipChanges += result.stats.membershipChanges;
    totals.snapshotsInstalled += result.stats.snapshotsInstalled;
    totals.readsDuringNewerLeader += result.stats.readsDuringNewerLeader;
    totals.tornWrites += result.stats.tornWrites;
    if (settings.snapshots.files) totals.fileSeeds += 1;
    totals.fileSnapshotsInstalled += result.stats.fileSnapshotsInstalled;
    totals.fileSnapshotsRestored += result.stats.fileSnapshotsRestored;
    totals.installCrashes += result.stats.installCrashes;
    totals.leaseGrants += result.stats.leaseGrants;
    totals.leaseExpiries += result.stats.leaseExpiries;
    totals.leaseKeepAlivesAcked += result.stats.leaseKeepAlivesAcked;
    totals.watchEvents += result.stats.watchEvents;
    totals.watchResumes += result.stats.watchResumes;
    totals.watchCanceled += result.stats.watchCanceled;
    totals.lockCalls += result.stats.lockCalls;
    totals.lockGrants += result.stats.lockGrants;
    totals.fencedWrites += result.stats.fencedWrites;
    totals.campaigns += result.stats.campaigns;
    totals.proclaims += result.stats.proclaims;
    totals.observations += result.stats.observations;
    if (single || values.verbose) {
      process.stdout.write(`seed ${seed}: ${result.status} ${JSON.stringify(result.stats)}\n`);
    }
    if (result.status !== 'ok') {
      printFailure(result);
      failures.push(result);
      if (!values['keep-going']) break;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const ran =
    failures.length > 0 && !values['keep-going'] ? (failures[0]?.seed ?? firstSeed) - firstSeed + 1 : count;
  process.stdout.write(
    `sim: ${ran} seeds from ${firstSeed}, ${failures.length} failed, ${seconds.toFixed(1)} s, ` +
      `${(ran / seconds).toFixed(1)} seeds/s, ${totals.events} events, ${totals.committed} committed entries, ` +
      `${totals.ops} acknowledged client ops (${totals.conditional} CAS/CAD/transactions, ` +
      `${totals.conditionalSucceeded} of them with their compares holding), ` +
      `${totals.retries} session write retries (${totals.retriesAnswered} answered, ` +
      `${totals.duplicateAnswers} duplicate applies answered from the table, ${totals.sessionsExpired} SESSION_EXPIRED), ` +
      `${totals.undecided} histories undecided (checker budget), ${totals.crashes} crashes, ${totals.partitions} partitions, ` +
      `${totals.membershipChanges} membership changes, ${totals.snapshotsInstalled} snapshots installed ` +
      `(${totals.fileSeeds} seeds with snapshot files: ${totals.fileSnapshotsInstalled} received files installed, ` +
      `${totals.fileSnapshotsRestored} restarts restored from a file, ${totals.installCrashes} crashes during an install), ` +
      `${totals.readsDuringNewerLeader} reads served while a newer leader existed, ${totals.tornWrites} torn writes, ` +
      `${totals.leaseGrants} leases granted (${totals.leaseExpiries} expired, ${totals.leaseKeepAlivesAcked} keepalives acknowledged), ` +
      `${totals.watchEvents} watch events checked (${totals.watchResumes} resumes, ${totals.watchCanceled} canceled), ` +
      `${totals.lockCalls} lock calls (${totals.lockGrants} granted, ${totals.fencedWrites} fenced writes applied), ` +
      `${totals.campaigns} campaigns (${totals.proclaims} proclaims applied, ${totals.observations} leader reports checked)\n`,
  );
  const first = failures[0];
  process.exit(first === undefined ? EXIT_CODE.ok : EXIT_CODE[first.status]);
}

await main();
