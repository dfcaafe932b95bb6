/**
 * Size limits every layer shares (the API checks them, the wire and the core assert them). Named
 * once here so that a bound is never restated with a different value.
 */

/** Cluster size: voters, learners and addresses in one configuration. */
export const CLUSTER_NODES_MAX = 64;

/** Keys, values and batches: checked before anything is proposed. */
export const KEY_BYTES_MAX = 1024;
export const VALUE_BYTES_MAX = 1024 * 1024;
export const BATCH_KEYS_MAX = 100;
/** Scan page size: default and bound. */
export const SCAN_LIMIT_DEFAULT = 1_000;
export const SCAN_LIMIT_MAX = 10_000;
/**
 * A scan page carries at most this many key and value bytes (then `is_truncated` and a token), so a
 * page forwarded from the leader always fits one cluster frame (5 MiB) and a reply never grows with
 * the values it happens to meet. One record (≤ 1 KiB key + 1 MiB value) always fits.
 */
export const SCAN_PAGE_BYTES_MAX = 4 * 1024 * 1024;
/**
 * Nesting of any JSON body: the deepest request today is five levels ({"command":{"SetMulti":
 * {"pairs":[["k","v"]]}}}); the bound leaves room for transactions and refuses pathological nesting
 * before anything walks it recursively (msgpackr, Ajv).
 */
export const JSON_DEPTH_MAX = 16;
/** Values (strings, numbers, containers) in one JSON body; a 2 MiB body holds fewer than this. */
export const JSON_VALUES_MAX = 2 * 1024 * 1024;

/** Longest raft_addr or addr accepted: host:port, a multiaddr, or a comma-separated few (as discovery finds them). */
export const ADDRESS_CHARS_MAX = 1_024;
/** Longest libp2p peer id accepted (base58btc of an identity multihash: 52 chars for Ed25519). */
export const PEER_ID_CHARS_MAX = 128;

/** Transactions: compares, ops per branch, and the entries one Scan inside a transaction returns. */
export const TXN_COMPARES_MAX = 64;
export const TXN_OPS_MAX = 128;
export const TXN_SCAN_LIMIT_MAX = 1_000;
/**
 * Key and value bytes that the Get and Scan results of one transaction branch may hold in all, so
 * that an answer always fits one cluster frame (5 MiB) when a follower forwards it, and one request
 * can never make the leader build a reply of hundreds of MiB (128 ops of 1 MiB values or 4 MiB
 * scans). Past it the transaction writes nothing and is refused (BATCH_TOO_LARGE).
 */
export const TXN_RESULT_BYTES_MAX = 4 * 1024 * 1024;

/**
 * Leases (docs/api.md "Leases"): how many one cluster holds, how many keys one lease carries, the
 * longest TTL, and the largest lease id (ids are positive safe integers). The shortest TTL depends on
 * the election timeout: see leaseTtlSecondsMin.
 */
export const LEASES_MAX = 10_000;
export const LEASE_KEYS_MAX = 10_000;
export const LEASE_TTL_SECONDS_MAX = 86_400;
export const LEASE_ID_MAX = Number.MAX_SAFE_INTEGER;
/**
 * Keys one lease info answer lists, by count and by their UTF-8 bytes; past either it says
 * `keys_truncated` and the next page starts `after` the last key listed. A lease may carry
 * LEASE_KEYS_MAX keys of KEY_BYTES_MAX each (10 MB): one answer must fit a cluster frame (5 MiB)
 * when a follower forwards it, even as JSON escapes (6 bytes for a control character), and no
 * answer grows with the lease. A page holds 1,000 short keys or 512 of the longest (1 KiB).
 */
export const LEASE_INFO_KEYS_MAX = 1_000;
export const LEASE_INFO_KEYS_BYTES_MAX = 512 * 1024;
/**
 * Keepalives the leader serves per second (a token bucket on its clock holding one second's worth),
 * whether they came to it or were forwarded by a follower; past it a keepalive is refused with 503
 * OVERLOADED and renews nothing. Each one costs the leader a ReadIndex round, so the bound keeps a
 * storm of renewals (a client in a tight retry loop, many clients reconnecting at once) from crowding
 * out reads and writes. 10,000 per second is ten times the bench's keepalive load (1,000 leases
 * renewed every second) and lets LEASES_MAX leases each renew every second, or every lease at TTL / 3
 * down to a 3 s TTL.
 */
export const LEASE_KEEPALIVES_PER_SECOND_MAX = 10_000;
/** The shortest TTL as a multiple of the longest election timeout: a new leader must have time to take over. */
export const LEASE_TTL_ELECTION_TIMEOUTS_MIN = 1.5;

/**
 * The shortest TTL a lease may have on a cluster whose longest election timeout is
 * `electionTimeoutMaxMs`: 1.5 election timeouts, rounded up to whole seconds (at least 1).
 */
export function leaseTtlSecondsMin(electionTimeoutMaxMs: number): number {
  return Math.max(1, Math.ceil((LEASE_TTL_ELECTION_TIMEOUTS_MIN * electionTimeoutMaxMs) / 1000));
}

/**
 * Watch (docs/api.md "Watch"): open watchers per node; revisions a watcher may lag behind the node's
 * applied index before it is canceled (its events wait in the node's history, not in a copy per
 * watcher); the history every node keeps of recent changes, in revisions and in key and value bytes.
 */
export const WATCHERS_MAX = 1_000;
export const WATCH_BUFFER_EVENTS_MAX = 10_000;
export const WATCH_HISTORY_REVISIONS_MAX = 100_000;
export const WATCH_HISTORY_BYTES_MAX = 64 * 1024 * 1024;
/** Progress events: default interval and bounds of `progress_interval_ms` (0: none). */
export const WATCH_PROGRESS_INTERVAL_MS_DEFAULT = 5_000;
export const WATCH_PROGRESS_INTERVAL_MS_MIN = 100;
export const WATCH_PROGRESS_INTERVAL_MS_MAX = 600_000;

/**
 * Locks (docs/api.md "Locks"): a lock key is `<name>/<lease id as 16 hex digits>`, so a name leaves
 * room for the 17 characters after it; waiters of one name at most (the owner check reads them all in
 * one transaction Scan); how long a lock call waits by default and at most.
 */
export const LOCK_KEY_SUFFIX_CHARS = 17;
export const LOCK_NAME_BYTES_MAX = KEY_BYTES_MAX - LOCK_KEY_SUFFIX_CHARS;
export const LOCK_WAITERS_MAX = TXN_SCAN_LIMIT_MAX;
export const LOCK_TIMEOUT_MS_DEFAULT = 10_000;
export const LOCK_TIMEOUT_MS_MAX = 300_000;

/** Failed authentications one source address may make per window before every call from it gets 429. */
export const AUTH_FAILURES_PER_WINDOW_MAX = 20;

/**
 * The largest snapshot of the state machine a node takes, sends or accepts (and so the largest
 * backup's state machine: a backup is one snapshot).
 */
export const SNAPSHOT_BYTES_MAX = 1024 * 1024 * 1024;

/** LMDB map size: the most a data dir's environment may grow to (virtual address space, not preallocated). */
export const LMDB_MAP_SIZE_BYTES = 16 * 1024 * 1024 * 1024;

/**
 * --quota-backend-bytes (as etcd's): past this size of the state machine the leader refuses writes
 * that may add data (507 QUOTA_EXCEEDED); deletes still pass. At most the map size, at least 1 MiB.
 */
export const QUOTA_BACKEND_BYTES_DEFAULT = 8 * 1024 * 1024 * 1024;
export const QUOTA_BACKEND_BYTES_MIN = 1024 * 1024;
export const QUOTA_BACKEND_BYTES_MAX = LMDB_MAP_SIZE_BYTES;
