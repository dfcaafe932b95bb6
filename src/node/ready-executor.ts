import { assert } from '../base/assert.ts';
import { APPLY_ENTRIES_MAX } from '../raft/config.ts';
import type { ReadyExecutor } from '../raft/ready-loop.ts';
import type { Entry, Message, NodeId, PersistedState, Ready } from '../raft/types.ts';
import { StorageError } from './errors.ts';
import { decodeProposal } from './codec.ts';
import type {
  ApplyListener,
  LogStore,
  PersistBatch,
  RaftNodeObserver,
  Snapshot,
  SnapshotFileSource,
  SnapshotWithData,
  Transport,
} from './interfaces.ts';
import type { ApplyOutcome, StateMachine } from './kv-state-machine.ts';
import { snapshotEvent } from './raft-events.ts';
import type { RequestTracker } from './request-tracker.ts';
import type { SnapshotManager } from './snapshot-manager.ts';

/** What the executor works with: the node's ports and trackers, and its way to fail-stop. */
export interface ExecutorHost {
  readonly id: NodeId;
  readonly options: {
    readonly logStore: LogStore;
    readonly transport: Transport;
    readonly stateMachine: StateMachine;
    readonly observer?: RaftNodeObserver | undefined;
    readonly applyListener?: ApplyListener | undefined;
    readonly snapshotFiles?: SnapshotFileSource | undefined;
  };
  readonly snapshots: SnapshotManager;
  readonly requests: RequestTracker;
  isStopped(): boolean;
  /** Storage failed: the node stops; the Ready in progress is abandoned. */
  failStop(error: unknown): void;
  readonly knownLeader: () => NodeId;
  /** The Ready is done and the core advanced. */
  done(): void;
}

/**
 * The node's side of the core's Ready contract (`runReady` calls it in the contract's order): the
 * synced write on the log store, the messages on the transport (snapshots in chunks), the committed
 * entries on the state machine, and the answers to the requests waiting for them.
 */
export class NodeReadyExecutor implements ReadyExecutor {
  private readonly host: ExecutorHost;
  /** The Ready the observer last saw (it sees each once, before its first message or apply). */
  private observedReady: Ready | null = null;

  constructor(host: ExecutorHost) {
    this.host = host;
  }

  send(ready: Ready, messages: readonly Message[]): void {
    this.observe(ready);
    for (const message of messages) this.sendMessage(message);
  }

  apply(ready: Ready): boolean {
    this.observe(ready);
    this.applyEntries(ready.committedEntries);
    return !this.host.isStopped(); // applying failed: storage fail-stop
  }

  answerReads(ready: Ready): void {
    this.host.requests.readsReleased(ready);
    this.serveReads();
  }

  advanced(): void {
    this.observedReady = null;
    this.host.done();
  }

  /** The Ready's synced write; then the received snapshot it accepted goes into the state machine. */
  persist(ready: Ready, done: () => void): void {
    const snapshot = this.host.snapshots.acceptedIn(ready);
    const batch: PersistBatch = { snapshot, hardState: ready.hardState, entries: ready.entries };
    this.host.options.logStore.persist(batch, (error) => {
      if (this.host.isStopped()) return;
      // A failed sync leaves us unsure what is on disk: fail-stop rather than acknowledge.
      if (error !== null) {
        this.host.failStop(error);
        return;
      }
      this.host.options.observer?.persisted?.(this.host.id, batch);
      if (snapshot === null) {
        done();
        return;
      }
      if (snapshot.data !== null) {
        if (this.installSnapshot({ meta: snapshot.meta, data: snapshot.data })) done();
        return; // else installing failed: storage fail-stop
      }
      this.installSnapshotFile(snapshot, done);
    });
  }

  /** Switch the state machine over to a received snapshot file (marked in the log just now). */
  private installSnapshotFile(snapshot: Snapshot, done: () => void): void {
    const files = this.host.options.snapshotFiles;
    assert(files !== undefined, 'a snapshot without bytes is a file');
    files.install(snapshot.meta.index).then(
      () => {
        if (this.host.isStopped()) return;
        assert(
          this.host.options.stateMachine.appliedIndex === snapshot.meta.index,
          'the installed snapshot file holds its index',
        );
        this.installed(snapshot);
        done();
      },
      (error: unknown) => {
        this.host.failStop(error);
      },
    );
  }

  /** The observer sees each Ready once, just before its first message leaves or its first entry is applied. */
  private observe(ready: Ready): void {
    if (this.observedReady === ready) return;
    this.observedReady = ready;
    this.host.options.observer?.ready?.(this.host.id, ready);
  }

  /** Restore the state machine from `snapshot`; false when storage failed (the node fail-stopped). */
  private installSnapshot(snapshot: SnapshotWithData): boolean {
    try {
      this.host.options.stateMachine.restore(snapshot.data, snapshot.meta.index, snapshot.meta.config);
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      this.host.failStop(error);
      return false;
    }
    this.installed(snapshot);
    return true;
  }

  /** The state machine holds `snapshot` now: tell the listeners, fail the requests it covers. */
  private installed(snapshot: Snapshot): void {
    this.host.snapshots.installed(snapshot);
    this.host.options.applyListener?.restored(snapshot.meta.index);
    this.host.options.observer?.snapshotInstalled?.(this.host.id, snapshot);
    this.host.options.observer?.raftEvent?.(this.host.id, snapshotEvent('snapshot_installed', snapshot));
    this.host.requests.failCoveredBy(snapshot.meta.index);
  }

  private sendMessage(message: Message): void {
    if (message.type !== 'snapshot') {
      this.host.options.transport.send(message);
      return;
    }
    this.host.snapshots.send(message, (chunk) => {
      this.host.options.transport.send(chunk);
    });
  }

  /** Apply the entries in one state-machine batch, then answer their clients (never inside the batch). */
  private applyEntries(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    assert(
      entries.length <= APPLY_ENTRIES_MAX,
      `apply batch of ${entries.length} entries exceeds ${APPLY_ENTRIES_MAX}`,
    );
    const outcomes: (ApplyOutcome | null | undefined)[] = [];
    try {
      this.applyBatch(entries, outcomes);
    } catch (error) {
      // The batch was one transaction and it was aborted: none of it is applied or answered.
      if (!(error instanceof StorageError)) throw error;
      this.host.failStop(error);
      return;
    }
    const leaderId = this.host.knownLeader;
    for (const [position, entry] of entries.entries()) {
      const outcome = outcomes[position];
      if (outcome === undefined) continue;
      this.host.options.applyListener?.applied(entry.index, outcome);
      this.host.options.observer?.applied?.(this.host.id, entry);
      this.host.requests.applied(entry, outcome, leaderId);
    }
  }

  private applyBatch(entries: readonly Entry[], outcomes: (ApplyOutcome | null | undefined)[]): void {
    const machine = this.host.options.stateMachine;
    machine.batch(() => {
      for (const entry of entries) {
        // Applying is idempotent by index: a state machine that already holds the entry skips it.
        if (entry.index <= machine.appliedIndex) {
          outcomes.push(undefined);
          continue;
        }
        outcomes.push(applyEntry(machine, entry));
      }
    });
    let bytes = 0;
    for (const entry of entries) if (entry.kind === 'command') bytes += entry.data.byteLength;
    this.host.snapshots.appliedEntries(bytes);
  }

  private serveReads(): void {
    const observer = this.host.options.observer;
    const served =
      observer?.readServed === undefined
        ? undefined
        : (readIndex: number, appliedIndex: number): void => {
            observer.readServed?.(this.host.id, readIndex, appliedIndex);
          };
    this.host.requests.serveReads(this.host.options.stateMachine, served);
  }
}

/**
 * Apply one committed entry to `machine`: a command with its session, proposal time and term; a
 * blank or configuration entry as a no-op (null: a revision with no change).
 */
export function applyEntry(machine: StateMachine, entry: Entry): ApplyOutcome | null {
  if (entry.kind !== 'command') {
    machine.applyNoop(entry.index, entry.kind === 'config' ? entry.config : undefined);
    return null;
  }
  const { command, session, proposedAtMs } = decodeProposal(entry.data);
  return machine.apply(entry.index, command, session, proposedAtMs, entry.term);
}

/**
 * The state machine may have applied entries whose commit index was never synced (it is written
 * only with the next synced batch). Only committed, locally durable entries are applied, so the
 * core starts with its commit index at least there, never behind what the machine shows.
 */
export function withAppliedCommit(persisted: PersistedState, appliedIndex: number): PersistedState {
  if (appliedIndex <= persisted.hardState.commit) return persisted;
  const lastIndex = persisted.entries.at(-1)?.index ?? persisted.snapshot?.index ?? 0;
  assert(
    appliedIndex <= lastIndex,
    `state machine applied ${appliedIndex} beyond the durable log (${lastIndex})`,
  );
  return { ...persisted, hardState: { ...persisted.hardState, commit: appliedIndex } };
}
