import type { Log } from '../../base/log.ts';
import { resolveTxt } from 'node:dns/promises';
import { type Libp2pTransport } from '../../network/libp2p-transport.ts';
import { toMultiaddrs } from '../../network/multiaddrs.ts';

/** First-contact addresses kept (static peers, ticket, DNS). */
export const CONTACTS_MAX = 64;
/** A contact without a live connection is dialed again this often. */
export const CONTACT_RETRY_MS = 5_000;
/** Dials of peers found by mDNS that may be in flight at once. */
export const MDNS_DIALS_PENDING_MAX = 16;
/** DNS discovery resolves its domain again this often. */
export const DNS_REFRESH_MS = 60_000;
/** TXT records read from one DNS answer. */
export const DNS_RECORDS_MAX = 64;

/** TXT lookup, injectable so tests need no DNS server. */
export type TxtResolver = (name: string) => Promise<string[][]>;

interface Contact {
  readonly address: string;
  readonly source: string;
  peerId: string | null;
  dialing: boolean;
}

/**
 * Gossip needs a first connection: this keeps one open to each bootstrap address (static peers, a
 * ticket's, DNS's) and to every peer mDNS finds. Connections are cookie-authenticated like Raft's.
 */
export class FirstContacts {
  private readonly transport: Libp2pTransport;
  private readonly log: Log;
  private readonly contacts = new Map<string, Contact>();
  private timer: NodeJS.Timeout | null = null;
  private mdnsPending = 0;
  private unsubscribe: (() => void) | null = null;

  constructor(transport: Libp2pTransport, log: Log) {
    this.transport = transport;
    this.log = log;
  }

  add(address: string, source: string): void {
    if (this.contacts.has(address)) return;
    if (this.contacts.size >= CONTACTS_MAX) {
      this.log(`discovery: more than ${CONTACTS_MAX} bootstrap addresses; ignoring ${address}`, 'warn');
      return;
    }
    toMultiaddrs(address); // RangeError for an unusable address, before keeping it
    const contact: Contact = { address, source, peerId: null, dialing: false };
    this.contacts.set(address, contact);
    if (this.timer !== null) this.dial(contact);
  }

  /** Dial every contact now and again every CONTACT_RETRY_MS; with `mdns`, dial what mDNS finds. */
  start(mdns: boolean): void {
    for (const contact of this.contacts.values()) this.dial(contact);
    this.timer = setInterval(() => {
      for (const contact of this.contacts.values()) {
        if (contact.peerId === null || !this.transport.isConnected(contact.peerId)) this.dial(contact);
      }
    }, CONTACT_RETRY_MS);
    if (mdns) {
      this.unsubscribe = this.transport.onPeerDiscovered((peerId, addresses) => {
        if (this.transport.isConnected(peerId.toString()) || this.mdnsPending >= MDNS_DIALS_PENDING_MAX)
          return;
        this.mdnsPending += 1;
        this.transport
          .connect([...addresses, peerId])
          .then(() => {
            this.log(`mdns: connected to ${peerId.toString()}`, 'debug');
          })
          .catch(() => undefined) // another cookie (refusal logged by the transport) or gone
          .finally(() => {
            this.mdnsPending -= 1;
          });
      });
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private dial(contact: Contact): void {
    if (contact.dialing) return;
    contact.dialing = true;
    this.transport
      .connect(toMultiaddrs(contact.address))
      .then((peerId) => {
        if (contact.peerId === null)
          this.log(
            `discovery: first contact with ${contact.address} (${contact.source}) is peer ${peerId}`,
            'debug',
          );
        contact.peerId = peerId;
      })
      .catch(() => undefined) // retried on the next round; Raft does not wait for it
      .finally(() => {
        contact.dialing = false;
      });
  }
}

/** `/dnsaddr` discovery: TXT records of `_dnsaddr.<domain>` of the form `dnsaddr=<multiaddr>`. */
export async function resolveDnsaddr(domain: string, resolver: TxtResolver = resolveTxt): Promise<string[]> {
  const records = await resolver(`_dnsaddr.${domain}`);
  const addresses: string[] = [];
  for (const chunks of records.slice(0, DNS_RECORDS_MAX)) {
    const text = chunks.join('');
    if (!text.startsWith('dnsaddr=')) continue;
    const address = text.slice('dnsaddr='.length);
    try {
      toMultiaddrs(address);
      addresses.push(address);
    } catch {
      // a record that is not a multiaddr is skipped, as libp2p's resolver does
    }
  }
  return addresses;
}
