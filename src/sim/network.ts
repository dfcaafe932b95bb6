import { assert } from '../base/assert.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { WireMessage } from '../node/interfaces.ts';
import type { NodeId } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';

export interface NetworkSettings {
  delayMsMin: number;
  delayMsMax: number;
  lossProbability: number;
  duplicateProbability: number;
}

/**
 * A simulated network: every message gets a seeded delay (so messages reorder), may be lost or
 * duplicated, and is dropped when a link is cut at send or at delivery time. Links are one-way,
 * so a symmetric partition cuts both directions.
 */
export class SimNetwork {
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly blocked = new Set<string>();
  settings: NetworkSettings;
  private readonly receivers = new Map<NodeId, (message: WireMessage) => void>();
  /** Messages scheduled and not yet delivered or dropped, by link (`from>to`): the senders' backlog. */
  private readonly inFlight = new Map<string, number>();
  sent = 0;
  delivered = 0;
  dropped = 0;

  constructor(events: EventQueue, prng: SeededPrng, settings: NetworkSettings) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
  }

  attach(id: NodeId, receive: (message: WireMessage) => void): void {
    this.receivers.set(id, receive);
  }

  detach(id: NodeId): void {
    this.receivers.delete(id);
  }

  send(message: WireMessage): void {
    this.sent += 1;
    if (this.isBlocked(message.from, message.to) || this.prng.chance(this.settings.lossProbability)) {
      this.dropped += 1;
      return;
    }
    this.schedule(message);
    if (this.prng.chance(this.settings.duplicateProbability)) this.schedule(message);
  }

  private schedule(message: WireMessage): void {
    const delayMs = this.prng.nextIntInclusive(this.settings.delayMsMin, this.settings.delayMsMax);
    const link = `${message.from}>${message.to}`;
    this.inFlight.set(link, (this.inFlight.get(link) ?? 0) + 1);
    this.events.after(delayMs, () => {
      this.inFlight.set(link, (this.inFlight.get(link) ?? 1) - 1);
      const receive = this.receivers.get(message.to);
      if (receive === undefined || this.isBlocked(message.from, message.to)) {
        this.dropped += 1;
        return;
      }
      this.delivered += 1;
      receive(message);
    });
  }

  /** Messages from `from` to `to` still on their way (draws nothing: seeds replay the same). */
  backlog(from: NodeId, to: NodeId): number {
    return this.inFlight.get(`${from}>${to}`) ?? 0;
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.size > 0 && this.blocked.has(`${from}>${to}`);
  }

  blockOneWay(from: NodeId, to: NodeId): void {
    assert(from !== to, 'a node is never cut from itself');
    this.blocked.add(`${from}>${to}`);
  }

  /** Cut every link between the two sides (both directions). */
  partition(sideA: readonly NodeId[], sideB: readonly NodeId[]): void {
    for (const a of sideA) {
      for (const b of sideB) {
        this.blockOneWay(a, b);
        this.blockOneWay(b, a);
      }
    }
  }

  /** Restore every link between the two sides (both directions). */
  heal(sideA: readonly NodeId[], sideB: readonly NodeId[]): void {
    for (const a of sideA) {
      for (const b of sideB) {
        this.blocked.delete(`${a}>${b}`);
        this.blocked.delete(`${b}>${a}`);
      }
    }
  }

  healAll(): void {
    this.blocked.clear();
  }

  get cutLinks(): number {
    return this.blocked.size;
  }
}
