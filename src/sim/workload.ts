import type { AspenError } from '../api/errors.ts';
import type { Outcome, RaftNode } from '../node/raft-node.ts';
import type { WriteApplied } from '../node/request-tracker.ts';
import { assert } from '../base/assert.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';
import type { EventQueue } from './event-queue.ts';
import type { HistoryOperation, KvOperation, KvOutcome } from './linearizability.ts';
import {
  commandOf,
  learn,
  outcomeOf,
  OperationSource,
  type Knowledge,
  type OperationMix,
} from './workload-ops.ts';

export interface WorkloadSettings extends OperationMix {
  readonly clientCount: number;
  readonly opTimeoutMs: number;
  readonly thinkMsMax: number;
  readonly opsPerClientMax: number;
  /** Probability that a client sends an operation to a random node instead of the leader it knows. */
  readonly wanderProbability: number;
}

/** How the workload reaches nodes: the simulation knows which are up. */
export interface NodeDirectory {
  liveNode(id: NodeId): RaftNode | undefined;
  randomLiveNodeId(): NodeId | undefined;
  /** Length of the committed chain the checkers have seen so far. */
  committedCount(): number;
}

interface ClientState {
  readonly id: number;
  preferredNode: NodeId;
  opsIssued: number;
  /** What this client last saw of each key: the expected values of its CAS and transactions. */
  readonly known: Knowledge;
}

interface InFlight {
  readonly clientId: number;
  readonly operation: KvOperation;
  readonly invokeTimeMs: number;
  done: boolean;
}

/**
 * Closed-loop clients: each issues one operation at a time to some node (the leader it last heard
 * of, else a random live one), records invocation and completion in virtual time, and times out.
 * A timed-out or interrupted operation is 'unknown'; a definite error is 'failed'.
 */
export class Workload {
  readonly history: HistoryOperation[] = [];
  private readonly inFlight = new Set<InFlight>();
  private readonly clients: ClientState[] = [];
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly settings: WorkloadSettings;
  private readonly directory: NodeDirectory;
  private readonly source: OperationSource;
  private running = false;
  opsOk = 0;
  opsFailed = 0;
  opsUnknown = 0;
  opsConditional = 0;
  opsConditionalSucceeded = 0;

  constructor(events: EventQueue, prng: SeededPrng, settings: WorkloadSettings, directory: NodeDirectory) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
    this.directory = directory;
    this.source = new OperationSource(prng, settings);
  }

  start(): void {
    this.running = true;
    for (let id = 1; id <= this.settings.clientCount; id += 1) {
      const client: ClientState = { id, preferredNode: 0, opsIssued: 0, known: new Map() };
      this.clients.push(client);
      this.events.after(this.prng.nextIntInclusive(0, this.settings.thinkMsMax), () => {
        this.issue(client);
      });
    }
  }

  /** Stop issuing new operations; those in flight still complete or time out. */
  pause(): void {
    this.running = false;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Stop issuing; whatever is still in flight may or may not have happened. */
  stop(): void {
    this.running = false;
    for (const flight of this.inFlight) this.finish(flight, { status: 'unknown' });
  }

  private issue(client: ClientState): void {
    if (!this.running || client.opsIssued >= this.settings.opsPerClientMax) return;
    const nodeId = this.pickNode(client);
    const node = nodeId === undefined ? undefined : this.directory.liveNode(nodeId);
    if (node === undefined) {
      this.events.after(10, () => {
        this.issue(client);
      });
      return;
    }
    client.opsIssued += 1;
    const operation = this.source.next(client.known);
    const flight: InFlight = { clientId: client.id, operation, invokeTimeMs: this.events.nowMs, done: false };
    this.inFlight.add(flight);
    this.events.after(this.settings.opTimeoutMs, () => {
      this.finish(flight, { status: 'unknown' });
    });
    const onError = (error: AspenError): void => {
      if (error.leaderId !== null) client.preferredNode = error.leaderId;
      else client.preferredNode = 0;
      this.finish(flight, error.definite ? { status: 'failed' } : { status: 'unknown' });
    };
    if (operation.kind === 'read') {
      const committedAtInvoke = this.directory.committedCount();
      node.read(operation.key, (outcome) => {
        if (!outcome.ok) {
          onError(outcome.error);
          return;
        }
        // Read freshness (stronger than linearizability, and what ReadIndex promises): a read
        // reflects every entry committed anywhere before it was invoked.
        if (outcome.value.appliedIndex < committedAtInvoke && !flight.done) {
          throw new SimViolation(
            'linearizability',
            `stale read of ${operation.key} on node ${nodeId ?? 0}: served at index ${outcome.value.appliedIndex}, but ${committedAtInvoke} entries were committed before it started`,
          );
        }
        const record = outcome.value.record;
        this.finish(
          flight,
          record === undefined
            ? { status: 'ok', value: null }
            : { status: 'ok', value: record.value, version: record.version },
        );
      });
      return;
    }
    node.write(commandOf(operation), (outcome: Outcome<WriteApplied>) => {
      if (outcome.ok) this.finish(flight, outcomeOf(operation, outcome.value.outcome));
      else onError(outcome.error);
    });
  }

  private pickNode(client: ClientState): NodeId | undefined {
    // Mostly the leader we heard of; sometimes any node, so that old and new leaders both see traffic.
    const wander = this.prng.chance(this.settings.wanderProbability);
    if (!wander && client.preferredNode !== 0 && this.directory.liveNode(client.preferredNode) !== undefined)
      return client.preferredNode;
    const nodeId = this.directory.randomLiveNodeId();
    if (nodeId !== undefined) client.preferredNode = nodeId;
    return nodeId;
  }

  private finish(flight: InFlight, outcome: KvOutcome): void {
    if (flight.done) return;
    flight.done = true;
    this.inFlight.delete(flight);
    const unknown = outcome.status === 'unknown';
    this.history.push({
      clientId: flight.clientId,
      operation: flight.operation,
      invokeTimeMs: flight.invokeTimeMs,
      completeTimeMs: unknown ? Number.POSITIVE_INFINITY : this.events.nowMs,
      outcome,
    });
    if (outcome.status === 'compared' || outcome.status === 'txn') {
      this.opsConditional += 1;
      if (outcome.succeeded) this.opsConditionalSucceeded += 1;
    }
    if (outcome.status === 'ok' || outcome.status === 'compared' || outcome.status === 'txn') this.opsOk += 1;
    else if (outcome.status === 'failed') this.opsFailed += 1;
    else this.opsUnknown += 1;
    const client = this.clients[flight.clientId - 1];
    assert(client !== undefined, `client ${flight.clientId} exists`);
    learn(client.known, flight.operation, outcome);
    if (this.running)
      this.events.after(this.prng.nextIntInclusive(0, this.settings.thinkMsMax), () => {
        this.issue(client);
      });
  }
}
