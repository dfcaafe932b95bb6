/** The Aspen client library: `new KvClient({ endpoints: ['http://127.0.0.1:8001'] })`. See docs/cli.md. */
export { KvClient } from './kv-client.ts';
export {
  ADD_LEARNER_TIMEOUT_MS_DEFAULT,
  BACKOFF_MS_MAX_DEFAULT,
  BACKOFF_MS_MIN_DEFAULT,
  CALL_TIMEOUT_MS_DEFAULT,
  ENDPOINTS_MAX,
  RETRY_ATTEMPTS_MAX_DEFAULT,
  RETRY_TOTAL_MS_MAX_DEFAULT,
  SCAN_PAGES_MAX,
  type CallOptions,
  type DiscoveredPeer,
  type HealthResult,
  type JoinTicketOptions,
  type JoinTicketResult,
  type KvClientOptions,
  type MemberSpec,
  type NodeInfo,
  type RetryPolicy,
} from './options.ts';
export {
  Compare,
  Op,
  TxnBuilder,
  transactionProblem,
  type CasResult,
  type Transaction,
  type TxnResult,
} from './txn.ts';
export { type WatchOptions, type WatchUpdate } from './watch.ts';
export { type BackupOptions, type SavedBackup } from './backup.ts';
export { verifyBackupFile } from '../api/backup-file.ts';
export { BackupFormatError, type VerifiedBackup } from '../api/backup-format.ts';
export {
  KEEPER_INTERVAL_MS_MIN,
  KEEPER_RENEWALS_PER_TTL,
  LeaseApi,
  type GrantOptions,
  type InfoOptions,
  type KeeperEnd,
  type KeeperOptions,
  type LeaseKeeper,
} from './lease.ts';
export { LOCK_ANSWER_MARGIN_MS, LOCK_ATTEMPTS_MAX, type Lock, type LockOptions } from './lock.ts';
export {
  OBSERVE_SILENT_MS,
  type CampaignOptions,
  type LeaderChange,
  type Leadership,
  type ObserveOptions,
} from './election.ts';
export { KvError, isKvError, type CompareCurrent, type KvErrorCode } from './errors.ts';
