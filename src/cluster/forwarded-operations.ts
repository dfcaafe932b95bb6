import type { ClusterController, KeyValueStore, LeaseService } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import type { ClientSession, SessionFields } from '../api/types.ts';
import { AssertionError } from '../base/assert.ts';
import { ADD_LEARNER_RUN_MS_MAX, CHANGE_MEMBERSHIP_RUN_MS_MAX } from '../node/control-client.ts';
import type { ClientRequest } from '../node/interfaces.ts';
import type { NodeId } from '../raft/types.ts';

export type Operation = ClientRequest['operation'];

/**
 * A forwarded keepalive waits at most this long for the leader (or the forward timeout, if
 * shorter). A keepalive only moves a deadline later and may run twice without harm, so giving up
 * early is safe; when the leader just died, the client hears TIMEOUT within a second and renews
 * through another node, instead of waiting FORWARD_TIMEOUT_MS_DEFAULT, longer than a short TTL.
 * A healthy leader answers one in a ReadIndex round (milliseconds).
 */
export const FORWARD_KEEPALIVE_TIMEOUT_MS = 1_000;

/** Forwarded operations that change the state (an answer lost on the way leaves their outcome unknown). */
export const MUTATING_KINDS: readonly Operation['kind'][] = [
  'write',
  'delete',
  'lease_grant',
  'lease_revoke',
  'add_learner',
  'change_membership',
  'remove_learner',
  // A lost answer leaves unknown whether the leader took the snapshot.
  'trigger_snapshot',
];

/**
 * How long a follower waits for the leader's answer to `kind`, given the configured forward timeout:
 * a membership call waits as long as it may run on the leader (an add-learner waits for its learner
 * to catch up), so that the leader's own answer, not a TIMEOUT of the follower's, reaches the client.
 */
export function forwardTimeoutMs(kind: Operation['kind'], configuredMs: number): number {
  switch (kind) {
    case 'lease_keepalive':
      return Math.min(configuredMs, FORWARD_KEEPALIVE_TIMEOUT_MS);
    case 'add_learner':
      return Math.max(configuredMs, ADD_LEARNER_RUN_MS_MAX);
    case 'change_membership':
      return Math.max(configuredMs, CHANGE_MEMBERSHIP_RUN_MS_MAX);
    default:
      return configuredMs;
  }
}

/** What the leader runs forwarded operations on: its own local services (never forwarded again). */
export interface LocalServices {
  readonly nodeId: NodeId;
  readonly store: KeyValueStore;
  /** Absent: this node was started without the lease service. */
  readonly leases: LeaseService | null;
  /** Absent: this node serves no membership calls (an engine without a controller). */
  readonly controller: ClusterController | null;
}

/** On the leader: run one forwarded operation locally. */
export function runForwarded(services: LocalServices, operation: Operation): Promise<unknown> {
  const { store } = services;
  switch (operation.kind) {
    case 'write':
      return store.write({ command: operation.command, ...sessionFields(operation.session) });
    case 'read':
      return store.read({ key: operation.key });
    case 'delete':
      return store.delete({ key: operation.key, ...sessionFields(operation.session) });
    case 'scan':
      return store.scan({
        prefix: operation.prefix,
        ...(operation.limit === null ? {} : { limit: operation.limit }),
        continuation_token: operation.continuationToken,
      });
    case 'invalid':
      return Promise.reject(new AspenError(operation.code, operation.message));
    case 'add_learner':
    case 'change_membership':
    case 'remove_learner':
    case 'trigger_snapshot':
      return runMembership(localController(services), operation);
    default:
      return runLease(localLeases(services), operation);
  }
}

export function localLeases(services: LocalServices): LeaseService {
  if (services.leases === null)
    throw new AspenError('NOT_FOUND', `node ${services.nodeId} was started without the lease service`);
  return services.leases;
}

export function localController(services: LocalServices): ClusterController {
  if (services.controller === null)
    throw new AspenError('NOT_FOUND', `node ${services.nodeId} serves no membership calls`);
  return services.controller;
}

function runMembership(controller: ClusterController, operation: Operation): Promise<unknown> {
  switch (operation.kind) {
    case 'add_learner':
      return controller.addLearner({ learner: operation.learner });
    case 'change_membership':
      return controller.changeMembership(
        operation.learners === null
          ? { members: operation.members }
          : { members: operation.members, learners: operation.learners },
      );
    case 'remove_learner':
      return controller.removeLearner({ learner_id: operation.learnerId });
    case 'trigger_snapshot':
      // On the leader only: a node that lost leadership since answers NOT_LEADER.
      return controller.triggerSnapshot({ node: 'leader' });
    default:
      throw new AssertionError(`not a membership operation: ${operation.kind}`);
  }
}

function runLease(leases: LeaseService, operation: Operation): Promise<unknown> {
  switch (operation.kind) {
    case 'lease_grant':
      return leases.grant({
        ttl_seconds: operation.ttlSeconds,
        ...(operation.leaseId === 0 ? {} : { lease_id: operation.leaseId }),
        ...sessionFields(operation.session),
      });
    case 'lease_revoke':
      return leases.revoke({ lease_id: operation.leaseId, ...sessionFields(operation.session) });
    case 'lease_keepalive':
      return leases.keepAlive({ lease_id: operation.leaseId });
    case 'lease_info':
      return leases.info({
        lease_id: operation.leaseId,
        keys: operation.keys,
        ...(operation.after === null ? {} : { after: operation.after }),
      });
    case 'lease_list':
      return leases.list();
    default:
      throw new AssertionError(`not a lease operation: ${operation.kind}`);
  }
}

/** A forwarded session back as request fields. */
function sessionFields(session: ClientSession | null): SessionFields {
  return session === null ? {} : { client_id: session.clientId, sequence: session.sequence };
}
