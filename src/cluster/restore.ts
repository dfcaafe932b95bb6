import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { base58btc } from 'multiformats/bases/base58';
import { readBackupFile } from '../api/backup-file.ts';
import { BackupFormatError, type VerifiedBackup } from '../api/backup-format.ts';
import type { Snapshot } from '../node/interfaces.ts';
import { decodeSnapshotState } from '../node/kv-state-machine.ts';
import type { MembershipConfig } from '../raft/types.ts';
import { WalLogStore, LmdbStorage } from '../storage/lmdb-store.ts';
import { loadIdentity } from './bootstrap.ts';
import type { NodeConfig } from './config.ts';
import { ConfigError, firstLine, StorageError } from './errors.ts';
import type { Log } from './logger.ts';

/** Entries of a non-empty data dir named in the refusal. */
const LISTED_ENTRIES_MAX = 4;

/** A data dir seeded from a backup; `undo` empties it again (the start that followed failed). */
export interface SeededRestore {
  readonly backup: VerifiedBackup;
  undo(): void;
}

/** The backup of --restore, verified, and its state machine readable; a ConfigError (exit 2) otherwise. */
function readRestoreFile(path: string): { backup: VerifiedBackup; data: Uint8Array } {
  let read;
  try {
    read = readBackupFile(path);
  } catch (error) {
    if (!(error instanceof BackupFormatError)) throw error;
    throw new ConfigError(`--restore ${path} refused: ${error.message}`);
  }
  try {
    // The checksum proves the bytes are the ones written; this proves this release can read them.
    decodeSnapshotState(read.data, read.backup.index);
  } catch (error) {
    throw new ConfigError(
      `--restore ${path} refused: its state machine cannot be read by this release (${firstLine(error)})`,
    );
  }
  return read;
}

/** A restore seeds a new, empty directory only: never one that holds a node's data. */
function checkEmptyDataDir(dataDir: string): boolean {
  if (!existsSync(dataDir)) return false;
  let entries: string[];
  try {
    entries = readdirSync(dataDir);
  } catch (error) {
    throw new ConfigError(`--restore: cannot read the data dir ${dataDir}: ${firstLine(error)}`);
  }
  if (entries.length > 0) {
    const listed = entries.slice(0, LISTED_ENTRIES_MAX).join(', ');
    throw new ConfigError(
      `--restore refused: the data dir ${dataDir} is not empty (it holds ${listed}${entries.length > LISTED_ENTRIES_MAX ? ', …' : ''}); restore into a new, empty directory (to reopen a restored node, start it without --restore)`,
    );
  }
  return true;
}

/** The new cluster's configuration: this node alone, at its Raft address, bound to its peer id. */
function soleMember(config: NodeConfig, peerId: string): MembershipConfig {
  const self = {
    id: config.nodeId,
    addr: `node-${config.nodeId}`,
    raftAddr: `${config.host}:${config.port}`,
    peerId,
  };
  return { voters: [config.nodeId], votersOutgoing: [], learners: [], nodes: [self] };
}

/** Write the backup as the data dir's snapshot, with a hard state at its term and commit index. */
async function writeSeed(dataDir: string, snapshot: Snapshot): Promise<void> {
  const storage = LmdbStorage.open(dataDir);
  try {
    const logStore = new WalLogStore(storage);
    const hardState = { term: snapshot.meta.term, vote: 0, commit: snapshot.meta.index };
    await new Promise<void>((resolve, reject) => {
      logStore.persist({ snapshot, hardState, entries: [] }, (error) => {
        if (error === null) resolve();
        else reject(error);
      });
    });
  } finally {
    await storage.close();
  }
}

/**
 * `aspen-node --restore FILE` (docs/operations.md "Backup and disaster recovery"), like `etcdutl
 * snapshot restore`: checks the file (a truncated or damaged one is refused before anything is
 * written), refuses a data dir that is not empty, then seeds it as a new cluster: the backup's state
 * machine as the snapshot at its index and term (so revisions continue after it), the configuration
 * replaced by this node alone. The node then starts as usual and elects itself; nodes join with
 * add-learner. Its identity is new: a fresh node key, and the cookie of --cookie.
 */
export async function seedFromBackup(config: NodeConfig, log: Log): Promise<SeededRestore> {
  const path = config.restore;
  if (path === null || config.storage !== 'lmdb') throw new ConfigError('--restore needs --storage lmdb');
  const { backup, data } = readRestoreFile(path);
  const existed = checkEmptyDataDir(config.dataDir);
  const undo = (): void => {
    if (!existed) rmSync(config.dataDir, { recursive: true, force: true });
    else
      for (const entry of readdirSync(config.dataDir))
        rmSync(join(config.dataDir, entry), { recursive: true, force: true });
  };
  try {
    mkdirSync(config.dataDir, { recursive: true });
    const key = await loadIdentity(config);
    const peerId = base58btc.baseEncode(key.publicKey.toMultihash().bytes);
    const meta = { index: backup.index, term: backup.term, config: soleMember(config, peerId) };
    await writeSeed(config.dataDir, { meta, data });
  } catch (error) {
    undo();
    if (error instanceof StorageError) throw error;
    throw new StorageError(`--restore: cannot seed ${config.dataDir}: ${firstLine(error)}`, { cause: error });
  }
  log(
    `restore: seeded ${config.dataDir} from ${path}: revision ${backup.index} (term ${backup.term}) of node ${backup.nodeId}, taken ${new Date(backup.createdAtMs).toISOString()}; node ${config.nodeId} is the only member of a new cluster (grow it with add-learner)`,
  );
  return { backup, undo };
}
