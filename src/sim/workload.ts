import type { AspenError } from '../api/errors.ts';
import type { Outcome, RaftNode } from '../node/raft-node.ts';
import type { Session } from '../node/sessions.ts';
import type { WriteApplied } from '../node/request-tracker.ts';
import { assert } from '../base/assert.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import { checkReadFresh } from './checkers.ts';
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

/** Every this many write-path operations of a client, one goes without a session (both paths run). */
export const SESSIONLESS_EVERY = 4;
/** Retries of a session write whose answer was indeterminate (same session and sequence, any node). */
export const WRITE_RETRIES_MAX = 3;
/** Pause before a retry (the node it goes to may be electing a leader). */
export const RETRY_DELAY_MS = 20;

interface ClientState {
  readonly id: number;
  preferredNode: NodeId;
  opsIssued: number;
  /** The session: a new epoch (a new client id, sequence from 1) after SESSION_EXPIRED. */
  sessionEpoch: number;
  /** The last sequence used in this epoch. */
  sequence: number;
  /** What this client last saw of each key: the expected values of its CAS and transactions. */
  readonly known: Knowledge;
}

interface InFlight {
  readonly clientId: number;
  readonly operation: KvOperation;
  readonly invokeTimeMs: number;
  readonly session: Session | null;
  /** 0 for the first send; an answer to any attempt settles the operation, an error only the latest's. */
  attempt: number;
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
  writeRetries = 0;
  retriesAnswered = 0;
  sessionsExpired = 0;

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
      const client: ClientState = {
        id,
        preferredNode: 0,
        opsIssued: 0,
        sessionEpoch: 0,
        sequence: 0,
        known: new Map(),
      };
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
    const session =
      operation.kind === 'read' || client.opsIssued % SESSIONLESS_EVERY === 0 ? null : nextSession(client);
    const flight: InFlight = {
      clientId: client.id,
      operation,
      invokeTimeMs: this.events.nowMs,
      session,
      attempt: 0,
      done: false,
    };
    this.inFlight.add(flight);
    if (operation.kind === 'read') this.sendRead(client, flight, node, nodeId ?? 0);
    else this.sendWrite(client, flight, node);
  }

  private sendRead(client: ClientState, flight: InFlight, node: RaftNode, nodeId: NodeId): void {
    const operation = flight.operation;
    assert(operation.kind === 'read', 'a read');
    this.events.after(this.settings.opTimeoutMs, () => {
      this.finish(flight, { status: 'unknown' });
    });
    const committedAtInvoke = this.directory.committedCount();
    node.read(operation.key, (outcome) => {
      if (!outcome.ok) {
        followHint(client, outcome.error);
        this.finish(flight, outcome.error.definite ? { status: 'failed' } : { status: 'unknown' });
        return;
      }
      if (!flight.done) checkReadFresh(operation.key, nodeId, outcome.value.appliedIndex, committedAtInvoke);
      const record = outcome.value.record;
      this.finish(
        flight,
        record === undefined
          ? { status: 'ok', value: null }
          : { status: 'ok', value: record.value, version: record.version },
      );
    });
  }

  /**
   * One attempt of a write. An answer (of this or an earlier attempt: same session, same outcome)
   * settles it; SESSION_EXPIRED leaves it in doubt; a definite error of the first attempt fails
   * it; anything else indeterminate is retried with the same session, a bounded number of times.
   */
  private sendWrite(client: ClientState, flight: InFlight, node: RaftNode): void {
    const attempt = flight.attempt;
    this.events.after(this.settings.opTimeoutMs, () => {
      if (flight.attempt === attempt) this.inDoubt(client, flight);
    });
    const onOutcome = (outcome: Outcome<WriteApplied>): void => {
      if (flight.done) return;
      if (outcome.ok) {
        const applied = outcome.value.outcome;
        if (applied.sessionExpired === true) {
          this.sessionsExpired += 1;
          client.sessionEpoch += 1;
          client.sequence = 0;
          this.finish(flight, { status: 'unknown' });
          return;
        }
        if (flight.attempt > 0) this.retriesAnswered += 1;
        this.finish(flight, outcomeOf(flight.operation, applied));
        return;
      }
      if (attempt !== flight.attempt) return; // a superseded attempt's error says nothing
      followHint(client, outcome.error);
      if (outcome.error.definite && attempt === 0) {
        // Never applied: the next operation may reuse the sequence.
        if (flight.session !== null) client.sequence = flight.session.sequence - 1;
        this.finish(flight, { status: 'failed' });
      } else this.inDoubt(client, flight);
    };
    node.write(commandOf(flight.operation), onOutcome, flight.session);
  }

  /** No answer to the latest attempt: retry with the same session, or leave the operation in doubt. */
  private inDoubt(client: ClientState, flight: InFlight): void {
    if (flight.done) return;
    if (flight.session === null || flight.attempt >= WRITE_RETRIES_MAX) {
      this.finish(flight, { status: 'unknown' });
      return;
    }
    flight.attempt += 1;
    this.writeRetries += 1;
    const attempt = flight.attempt;
    this.events.after(RETRY_DELAY_MS, () => {
      if (flight.done || flight.attempt !== attempt) return;
      const nodeId = this.pickNode(client);
      const node = nodeId === undefined ? undefined : this.directory.liveNode(nodeId);
      if (node === undefined) this.inDoubt(client, flight);
      else this.sendWrite(client, flight, node);
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

function nextSession(client: ClientState): Session {
  client.sequence += 1;
  return { clientId: `sim-c${client.id}-e${client.sessionEpoch}`, sequence: client.sequence };
}

/** Follow a leader hint, or forget the preferred node when there is none. */
function followHint(client: ClientState, error: AspenError): void {
  client.preferredNode = error.leaderId ?? 0;
}
