import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { JOIN_TTL_SECONDS_MAX, JOIN_TTL_SECONDS_MIN } from '../api/limits.ts';
import { assert } from '../base/assert.ts';
import type { NodeId } from '../base/ids.ts';
import { JOIN_CREDENTIAL_BYTES, type JoinRefusal, type JoinRequest } from '../network/join.ts';

/** Join credentials a node keeps at once, unused (expired ones are dropped first to make room). */
export const JOIN_CREDENTIALS_PENDING_MAX = 64;
/**
 * An expired credential is kept this much longer, so that a late attempt is told "expired" rather
 * than "used or unknown" (it still counts against JOIN_CREDENTIALS_PENDING_MAX until dropped).
 */
export const JOIN_CREDENTIAL_EXPIRED_KEPT_MS = JOIN_TTL_SECONDS_MAX * 1_000;
/** Node id → peer id bindings of joins remembered (the oldest forgotten first). */
export const JOIN_BINDINGS_MAX = 64;

interface Pending {
  /** SHA-256 of the credential: the credential itself is never kept. */
  readonly digest: Buffer;
  readonly nodeId: NodeId;
  readonly expiresAtMs: number;
}

export type JoinVerdict = { readonly ok: true } | { readonly ok: false; readonly reason: JoinRefusal };

function sha256(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest();
}

/**
 * The join credentials this node minted and that are not used yet, in memory only: a restart voids
 * them all (fail-safe: a credential never outlives the process that can check it). Each is 256
 * random bits bound to one node id, valid until its expiry, and good for one join; only its SHA-256
 * is kept, and a presented credential is compared with every pending one in constant time.
 */
export class JoinCredentials {
  private pending: Pending[] = [];
  private readonly bindings = new Map<NodeId, string>();
  private readonly nowMs: () => number;

  constructor(nowMs: () => number = Date.now) {
    this.nowMs = nowMs;
  }

  /** Credentials minted and neither used nor dropped. */
  get size(): number {
    return this.pending.length;
  }

  /**
   * A new credential for `nodeId`, valid for `ttlSeconds`; null when JOIN_CREDENTIALS_PENDING_MAX
   * unexpired ones are pending already (nothing is minted).
   */
  mint(nodeId: NodeId, ttlSeconds: number): { credential: Buffer; expiresAtMs: number } | null {
    assert(
      Number.isSafeInteger(ttlSeconds) &&
        ttlSeconds >= JOIN_TTL_SECONDS_MIN &&
        ttlSeconds <= JOIN_TTL_SECONDS_MAX,
      'a checked join ttl',
    );
    const nowMs = this.nowMs();
    this.prune(nowMs, JOIN_CREDENTIAL_EXPIRED_KEPT_MS);
    if (this.pending.length >= JOIN_CREDENTIALS_PENDING_MAX) this.prune(nowMs, 0);
    if (this.pending.length >= JOIN_CREDENTIALS_PENDING_MAX) return null;
    const credential = randomBytes(JOIN_CREDENTIAL_BYTES);
    const expiresAtMs = nowMs + ttlSeconds * 1_000;
    this.pending.push({ digest: sha256(credential), nodeId, expiresAtMs });
    assert(
      this.pending.length <= JOIN_CREDENTIALS_PENDING_MAX,
      'pending join credentials within their bound',
    );
    return { credential, expiresAtMs };
  }

  /**
   * Check a join: the credential must be pending (constant-time comparison with each), unexpired,
   * and bound to the node id asked for. On success it is used up and `nodeId → remotePeerId` is
   * remembered. A wrong node id leaves the credential pending (its holder could ask with the right
   * one anyway); an expired one stays until pruned, so a retry hears "expired" again.
   */
  redeem(request: JoinRequest, remotePeerId: string): JoinVerdict {
    const nowMs = this.nowMs();
    this.prune(nowMs, JOIN_CREDENTIAL_EXPIRED_KEPT_MS);
    if (request.credential.byteLength !== JOIN_CREDENTIAL_BYTES)
      return { ok: false, reason: 'used_or_unknown' };
    const digest = sha256(request.credential);
    let found = -1;
    // bounded: at most JOIN_CREDENTIALS_PENDING_MAX entries; every one is compared (no early exit)
    for (const [index, entry] of this.pending.entries())
      if (timingSafeEqual(digest, entry.digest) && found < 0) found = index;
    const entry = this.pending[found];
    if (entry === undefined) return { ok: false, reason: 'used_or_unknown' };
    if (nowMs >= entry.expiresAtMs) return { ok: false, reason: 'expired' };
    if (entry.nodeId !== request.nodeId) return { ok: false, reason: 'wrong_node_id' };
    this.pending.splice(found, 1);
    this.bind(entry.nodeId, remotePeerId);
    return { ok: true };
  }

  /** The peer id that node `nodeId` joined from, when it joined through this node (for add-learner). */
  joinedPeerId(nodeId: NodeId): string | undefined {
    return this.bindings.get(nodeId);
  }

  private bind(nodeId: NodeId, peerId: string): void {
    this.bindings.delete(nodeId);
    if (this.bindings.size >= JOIN_BINDINGS_MAX) {
      const oldest = this.bindings.keys().next();
      if (oldest.done !== true) this.bindings.delete(oldest.value);
    }
    this.bindings.set(nodeId, peerId);
  }

  /** Drop the credentials expired for at least `graceMs`. */
  private prune(nowMs: number, graceMs: number): void {
    this.pending = this.pending.filter((entry) => nowMs < entry.expiresAtMs + graceMs);
  }
}
