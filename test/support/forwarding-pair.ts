import { FORWARD_TIMEOUT_MS_DEFAULT, ForwardingStore } from '../../src/cluster/forwarding.ts';
import { decodeWireMessage, encodeWireMessage } from '../../src/network/codec.ts';
import type { ClientRequest } from '../../src/node/interfaces.ts';
import { unusedStore } from './unused-services.ts';

type StoreOptions = ConstructorParameters<typeof ForwardingStore>[0];
/** A node's own services and settings; the pair supplies node id, clock and transport. */
type Side = Partial<Omit<StoreOptions, 'nodeId' | 'clock' | 'transport'>>;

const clock = { nowMs: () => 0, setTimer: () => () => undefined };

/**
 * Node 2 (a follower) and node 1 (the leader), linked through the wire codec: every request the
 * follower forwards is encoded, decoded, recorded in `sent` and run by the leader, whose answer
 * comes back the same way. Timers never fire.
 */
export function forwardingPair(
  followerSide: Side,
  leaderSide: Side,
): { follower: ForwardingStore; sent: ClientRequest[] } {
  const sent: ClientRequest[] = [];
  let leader: ForwardingStore | null = null;
  const follower = new ForwardingStore({
    local: unusedStore,
    ...followerSide,
    nodeId: 2,
    clock,
    transport: {
      send: (message) => {
        const decoded = decodeWireMessage(encodeWireMessage(message));
        if (decoded.type !== 'client_request') return;
        sent.push(decoded);
        leader?.handleRequest(decoded);
      },
    },
  });
  leader = new ForwardingStore({
    local: unusedStore,
    ...leaderSide,
    nodeId: 1,
    clock,
    transport: {
      send: (message) => {
        const decoded = decodeWireMessage(encodeWireMessage(message));
        if (decoded.type === 'client_response') follower.handleResponse(decoded);
      },
    },
  });
  return { follower, sent };
}

export interface RecordedTimer {
  readonly delayMs: number;
  readonly fire: () => void;
}

/**
 * Node 2, a follower that knows leader 1, which is gone: nothing it forwards is answered. Every
 * forward timer it sets is recorded (with its delay) for the test to fire.
 */
export function followerOfSilentLeader(followerSide: Side): {
  follower: ForwardingStore;
  timers: RecordedTimer[];
} {
  const timers: RecordedTimer[] = [];
  const follower = new ForwardingStore({
    local: unusedStore,
    timeoutMs: FORWARD_TIMEOUT_MS_DEFAULT,
    ...followerSide,
    nodeId: 2,
    knownLeader: () => 1,
    clock: {
      nowMs: () => 0,
      setTimer: (delayMs, fire) => {
        timers.push({ delayMs, fire });
        return () => undefined;
      },
    },
    transport: { send: () => undefined },
  });
  return { follower, timers };
}
