import type { PeerId, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';

/** Frames waiting for a stream to open or drain; past it frames are dropped (Raft tolerates loss) and counted. */
export const OUTBOUND_FRAMES_QUEUED_MAX = 4_096;

/** Largest single stream write made of queued frames (frames themselves are bounded by the frame limit). */
export const COALESCED_WRITE_BYTES_MAX = 1024 * 1024;

/** One peer's outbound side: where to dial it, its long-lived Raft stream and the frames waiting for it. */
export interface Outbound {
  /** Where to reach the peer, in order of preference (QUIC first), or the peer id learned from its own connection. */
  addresses: readonly (Multiaddr | PeerId)[];
  stream: Stream | null;
  /** The libp2p peer id at the other end of `stream` (null while there is none). */
  streamPeer: string | null;
  /** The id of the libp2p connection `stream` runs on (null while there is none). */
  streamConnection: string | null;
  /** That connection's remote address without its /p2p/ part (null while there is none). */
  streamAddress: string | null;
  /** The stream's send buffer is full: queue until it drains. */
  blocked: boolean;
  opening: boolean;
  queue: Uint8Array[];
  retryAtMs: number;
  /** Frames wait for the transport's next flush (scheduleFlush). */
  flushScheduled: boolean;
}

/** A peer to dial at `addresses`, nothing queued yet. */
export function newOutbound(addresses: readonly (Multiaddr | PeerId)[]): Outbound {
  return {
    addresses,
    stream: null,
    streamPeer: null,
    streamConnection: null,
    streamAddress: null,
    blocked: false,
    opening: false,
    queue: [],
    retryAtMs: 0,
    flushScheduled: false,
  };
}

function concatFrames(frames: readonly Uint8Array[], start: number, end: number, bytes: number): Uint8Array {
  const joined = new Uint8Array(bytes);
  let offset = 0;
  for (let index = start; index < end; index += 1) {
    const frame = frames[index];
    if (frame === undefined) continue;
    joined.set(frame, offset);
    offset += frame.length;
  }
  return joined;
}

/**
 * The next stream write from `queue`, starting at frame `start`: frames joined up to
 * COALESCED_WRITE_BYTES_MAX (a single larger frame goes alone). Returns the write and the index
 * after its last frame.
 */
export function coalesce(queue: readonly Uint8Array[], start: number): { write: Uint8Array; end: number } {
  let bytes = 0;
  let end = start;
  while (
    end < queue.length &&
    (end === start || bytes + (queue[end]?.length ?? 0) <= COALESCED_WRITE_BYTES_MAX)
  ) {
    bytes += queue[end]?.length ?? 0;
    end += 1;
  }
  const write =
    end - start === 1 ? (queue[start] ?? new Uint8Array(0)) : concatFrames(queue, start, end, bytes);
  return { write, end };
}

/** A multiaddr as text without its /p2p/<peer id> part: an address to compare with another. */
export function bareAddress(address: Multiaddr | PeerId): string {
  const text = address.toString();
  const at = text.indexOf('/p2p/');
  return at === -1 ? text : text.slice(0, at);
}
