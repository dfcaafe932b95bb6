/**
 * The backup commands of the aspen CLI (docs/cli.md "Backups"): `aspen backup save FILE` streams
 * GET /backup into FILE (via FILE.tmp, verified, synced, renamed); `aspen backup status FILE`
 * checks a file offline and prints its header. A file that is not an intact backup: exit 1.
 */
import type { AddCommand } from './aspen-command.ts';
import { verifyBackupFile } from '../api/backup-file.ts';
import { BackupFormatError, type VerifiedBackup } from '../api/backup-format.ts';
import type { KvClient } from '../client/kv-client.ts';

/** What the backup commands need of the CLI: the client, the output mode, and how to print a line. */
export interface BackupContext {
  readonly kv: KvClient;
  readonly json: boolean;
  readonly print: (text: string) => void;
}

export type BackupAction = (context: BackupContext, args: readonly string[]) => Promise<void>;

/** How often the progress line is redrawn on a terminal. */
export const PROGRESS_INTERVAL_MS = 200;
const MEBIBYTE = 1024 * 1024;

function mebibytes(bytes: number): string {
  return `${(bytes / MEBIBYTE).toFixed(1)} MiB`;
}

/**
 * A progress line on stderr (bytes received of the whole), redrawn at most every
 * PROGRESS_INTERVAL_MS, only when stderr is a terminal; `done` clears it.
 */
function progressLine(): {
  readonly onProgress: (received: number, total: number | null) => void;
  readonly done: () => void;
} {
  if (!process.stderr.isTTY) return { onProgress: () => undefined, done: () => undefined };
  let drawnAtMs = 0;
  return {
    onProgress: (received, total) => {
      const nowMs = Date.now();
      if (nowMs - drawnAtMs < PROGRESS_INTERVAL_MS) return;
      drawnAtMs = nowMs;
      const of = total === null ? '' : ` of ${mebibytes(total)}`;
      process.stderr.write(`\rreceiving backup: ${mebibytes(received)}${of}\x1b[K`);
    },
    done: () => {
      process.stderr.write('\r\x1b[K');
    },
  };
}

/** The header and checksum of a backup, one line. */
function summary(backup: VerifiedBackup): string {
  return (
    `revision ${backup.index} (snapshot index ${backup.index}, term ${backup.term}), ` +
    `${backup.totalBytes} bytes, taken by node ${backup.nodeId} at ${new Date(backup.createdAtMs).toISOString()}, ` +
    `sha256 ${backup.sha256}`
  );
}

function fileArgument(file: string | undefined): string {
  if (file === undefined || file.length === 0) throw new BackupFormatError('give the backup FILE');
  return file;
}

/** The actions, by command name as `aspen backup NAME` (see addBackupCommands). */
export const backupActions: Readonly<Record<string, BackupAction>> = {
  save: async ({ kv, json, print }, [file]) => {
    const path = fileArgument(file);
    const progress = progressLine();
    let saved;
    try {
      saved = await kv.saveBackup(path, { onProgress: progress.onProgress });
    } finally {
      progress.done();
    }
    print(json ? JSON.stringify(saved) : `saved ${path}: ${summary(saved)}`);
  },
  status: async ({ json, print }, [file]) => {
    const path = fileArgument(file);
    let backup: VerifiedBackup;
    try {
      backup = await verifyBackupFile(path);
    } catch (error) {
      if (!(error instanceof BackupFormatError)) throw error;
      throw new BackupFormatError(`${path}: ${error.message}`);
    }
    print(
      json
        ? JSON.stringify({ path, ...backup })
        : `${path}: intact Aspen backup (format ${backup.formatVersion}): ${summary(backup)}`,
    );
  },
};

/** The `aspen backup …` subcommands, each added by `add` (names as in backupActions). */
export function addBackupCommands(add: AddCommand): void {
  add(
    'save <file>',
    'save a consistent backup of the cluster (GET /backup, admin) to FILE: every write acknowledged ' +
      'before it started is in it; written to FILE.tmp, verified, synced, then renamed; progress on a terminal',
    (command) => command.summary('save a backup of the cluster to FILE'),
  );
  add(
    'status <file>',
    'check a backup FILE offline (its checksum) and print its header; exit 1 when it is truncated or damaged',
    (command) => command.summary('check a backup FILE and print its revision, size and checksum'),
  );
}
