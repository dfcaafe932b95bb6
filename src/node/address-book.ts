import { assert } from '../base/assert.ts';
import type { NodeId } from '../raft/types.ts';

/** Peers one node keeps addresses for: members, static peers and (later) discovered nodes. */
export const ADDRESS_BOOK_ENTRIES_MAX = 1_024;
/** Listeners of address changes (the node, discovery, metrics). */
export const ADDRESS_BOOK_LISTENERS_MAX = 16;

/** A change of the address map: a peer added, its address changed, or the peer removed. */
export interface PeerEvent {
  readonly kind: 'added' | 'changed' | 'removed';
  readonly id: NodeId;
  /** The new address; the last known one for `removed`. */
  readonly address: string;
}

/**
 * The node id → address map a transport dials by, with change events. Setting the same address again
 * is not a change, so discovery can refresh entries every few seconds without noise.
 */
export class AddressBook {
  private readonly addresses = new Map<NodeId, string>();
  private readonly listeners = new Set<(event: PeerEvent) => void>();

  get(id: NodeId): string | undefined {
    return this.addresses.get(id);
  }

  entries(): ReadonlyMap<NodeId, string> {
    return new Map(this.addresses);
  }

  /** Add or update a peer; returns the event it caused, or null when nothing changed. */
  set(id: NodeId, address: string): PeerEvent | null {
    assert(Number.isSafeInteger(id) && id > 0, `node ids are positive integers, got ${id}`);
    const previous = this.addresses.get(id);
    if (previous === address) return null;
    if (previous === undefined && this.addresses.size >= ADDRESS_BOOK_ENTRIES_MAX) {
      throw new RangeError(`the address book holds at most ${ADDRESS_BOOK_ENTRIES_MAX} peers`);
    }
    this.addresses.set(id, address);
    return this.emit({ kind: previous === undefined ? 'added' : 'changed', id, address });
  }

  delete(id: NodeId): PeerEvent | null {
    const previous = this.addresses.get(id);
    if (previous === undefined) return null;
    this.addresses.delete(id);
    return this.emit({ kind: 'removed', id, address: previous });
  }

  /** Subscribe to changes; the returned function unsubscribes. */
  subscribe(listener: (event: PeerEvent) => void): () => void {
    if (this.listeners.size >= ADDRESS_BOOK_LISTENERS_MAX)
      throw new RangeError(`at most ${ADDRESS_BOOK_LISTENERS_MAX} address listeners`);
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private emit(event: PeerEvent): PeerEvent {
    for (const listener of this.listeners) listener(event);
    return event;
  }
}
