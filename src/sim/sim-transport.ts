import type { ClusterTransport, WireMessage } from '../node/interfaces.ts';
import { AddressBook, type PeerEvent } from '../node/address-book.ts';
import { assert } from '../base/assert.ts';
import type { NodeId } from '../raft/types.ts';
import type { SimNetwork } from './network.ts';

/**
 * One node's endpoint on the simulated network, with the same contract as the libp2p transport
 * (address map, change events, drops counted). Addresses are opaque here: the network routes by id.
 * It draws no randomness of its own, so seeds replay the same with or without it.
 */
export class SimTransport implements ClusterTransport {
  readonly nodeId: NodeId;
  private readonly network: SimNetwork;
  private readonly addressBook = new AddressBook();
  private stopped = false;
  messagesDropped = 0;

  constructor(network: SimNetwork, nodeId: NodeId, onMessage: (message: WireMessage) => void) {
    this.network = network;
    this.nodeId = nodeId;
    network.attach(nodeId, onMessage);
  }

  addPeer(id: NodeId, address: string): void {
    assert(id !== this.nodeId, 'a node is not its own peer');
    if (address.length === 0) throw new RangeError('an empty peer address');
    this.addressBook.set(id, address);
  }

  removePeer(id: NodeId): void {
    this.addressBook.delete(id);
  }

  peerAddresses(): ReadonlyMap<NodeId, string> {
    return this.addressBook.entries();
  }

  onPeerEvent(listener: (event: PeerEvent) => void): () => void {
    return this.addressBook.subscribe(listener);
  }

  send(message: WireMessage): void {
    if (this.stopped || this.addressBook.get(message.to) === undefined) {
      this.messagesDropped += 1;
      return;
    }
    this.network.send(message);
  }

  /** Frames on their way to `to` (a snapshot file is sent as fast as they arrive, as over libp2p). */
  backlog(to: NodeId): number {
    return this.network.backlog(this.nodeId, to);
  }

  stop(): Promise<void> {
    if (!this.stopped) this.network.detach(this.nodeId);
    this.stopped = true;
    return Promise.resolve();
  }
}
