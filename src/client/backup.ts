import { open, rename, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { dirname } from 'node:path';
import { verifyBackupFile } from '../api/backup-file.ts';
import { BackupFormatError, BackupVerifier, type VerifiedBackup } from '../api/backup-format.ts';
import { KvError } from './errors.ts';
import { assert, backoff, isAborted, TRANSIENT_CODES } from './retry.ts';
import { connect, streamSignal, type WatchTarget } from './watch.ts';

export interface BackupOptions {
  /** Told after each piece received: bytes so far, and the whole (null until the node said). */
  readonly onProgress?: (receivedBytes: number, totalBytes: number | null) => void;
  /** Ends the transfer (ABORTED); a file being written is removed. */
  readonly signal?: AbortSignal;
  /**
   * Bound on waiting for the answer to start and, once it streams, between two pieces (default:
   * the client's timeoutMs). A large backup takes as long as it takes; a stalled one fails.
   */
  readonly idleTimeoutMs?: number;
}

/** A backup written to a file: what its header says, its size, SHA-256, where it went and from which endpoint. */
export interface SavedBackup extends VerifiedBackup {
  readonly path: string;
  readonly endpoint: string;
}

/** Where a backup is asked for: the client's streams, and the endpoint to try first (the leader's, if known). */
export interface BackupTarget extends WatchTarget {
  readonly preferred: string | null;
}

const BACKUP_STREAM = { accept: 'application/octet-stream', what: 'backup' } as const;

/** The endpoints in the order they are asked: the preferred one first. */
function endpointOrder(target: BackupTarget): string[] {
  const { preferred, endpoints } = target;
  return preferred === null || !endpoints.includes(preferred)
    ? [...endpoints]
    : [preferred, ...endpoints.filter((endpoint) => endpoint !== preferred)];
}

/**
 * GET /backup from the first endpoint that answers, each piece checked as it arrives and handed to
 * `sink` (which may take its time: the stream waits). A refusal worth another attempt (no leader,
 * a node down) goes to the next endpoint with the client's backoff; a stream that breaks once it
 * started is not resumed (the caller asks again). Resolves with the verified backup.
 */
export async function receiveBackup(
  target: BackupTarget,
  sink: (chunk: Uint8Array) => Promise<void>,
  options: BackupOptions = {},
): Promise<{ backup: VerifiedBackup; endpoint: string }> {
  const endpoints = endpointOrder(target);
  const idleMs = options.idleTimeoutMs ?? target.timeoutMs;
  const endMs = Date.now() + target.retry.totalMsMax;
  for (let attempt = 1; attempt <= target.retry.attemptsMax; attempt += 1) {
    const endpoint = endpoints[(attempt - 1) % endpoints.length];
    assert(endpoint !== undefined, 'there is at least one endpoint');
    const connection = new AbortController();
    const signal = streamSignal(options.signal, connection);
    let response: IncomingMessage;
    try {
      response = await connect(
        { ...target, timeoutMs: idleMs },
        endpoint,
        '/backup',
        signal,
        connection,
        BACKUP_STREAM,
      );
    } catch (error) {
      if (isAborted(options.signal))
        throw new KvError('ABORTED', 'backup: aborted by the caller', { endpoint, definite: true });
      const last = attempt === target.retry.attemptsMax || Date.now() >= endMs;
      if (!(error instanceof KvError) || !TRANSIENT_CODES.has(error.code) || last) throw error;
      await backoff(target.retry, attempt, endMs, options.signal);
      continue;
    }
    const backup = await streamBackup(response, { endpoint, idleMs, connection, sink, options });
    return { backup, endpoint };
  }
  throw new KvError('CONNECTION', 'backup: no endpoint answered', { definite: true });
}

interface Transfer {
  readonly endpoint: string;
  readonly idleMs: number;
  readonly connection: AbortController;
  readonly sink: (chunk: Uint8Array) => Promise<void>;
  readonly options: BackupOptions;
}

/** The answer's pieces into the verifier and the sink; a stall of idleMs aborts the connection. */
async function streamBackup(response: IncomingMessage, transfer: Transfer): Promise<VerifiedBackup> {
  const { endpoint, idleMs, connection, sink, options } = transfer;
  const length = Number(response.headers['content-length']);
  const totalBytes = Number.isSafeInteger(length) ? length : null;
  const verifier = new BackupVerifier();
  const stall = (): NodeJS.Timeout =>
    setTimeout(() => {
      connection.abort();
    }, idleMs);
  let timer = stall();
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      clearTimeout(timer);
      verifier.push(chunk);
      await sink(chunk);
      options.onProgress?.(verifier.receivedBytes, totalBytes);
      timer = stall();
    }
    return verifier.finish();
  } catch (error) {
    const received = `after ${verifier.receivedBytes} bytes`;
    if (error instanceof BackupFormatError)
      throw new KvError('BAD_RESPONSE', `backup from ${endpoint} refused ${received}: ${error.message}`, {
        endpoint,
        definite: true,
      });
    if (isAborted(options.signal))
      throw new KvError('ABORTED', `backup: aborted by the caller ${received}`, { endpoint, definite: true });
    if (connection.signal.aborted)
      throw new KvError('TIMEOUT', `backup: ${endpoint} sent nothing for ${idleMs} ms ${received}`, {
        endpoint,
        definite: true,
      });
    if (!(error instanceof Error) || !('code' in error)) throw error;
    throw new KvError(
      'CONNECTION',
      `backup: the stream from ${endpoint} broke ${received} (${String(error.code)})`,
      { endpoint, definite: true },
    );
  } finally {
    clearTimeout(timer);
    response.destroy();
  }
}

/** GET /backup whole in memory (at most BACKUP_BYTES_MAX), verified. */
export async function backupBytes(
  target: BackupTarget,
  options: BackupOptions = {},
): Promise<{ backup: VerifiedBackup; bytes: Uint8Array; endpoint: string }> {
  const chunks: Uint8Array[] = [];
  const received = await receiveBackup(
    target,
    (chunk) => {
      chunks.push(chunk);
      return Promise.resolve();
    },
    options,
  );
  return { ...received, bytes: Buffer.concat(chunks) };
}

/** All of `chunk` into the file (a write may take part of it; each pass takes at least a byte). */
async function writeAll(handle: Awaited<ReturnType<typeof open>>, chunk: Uint8Array): Promise<void> {
  for (let offset = 0; offset < chunk.byteLength;) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset);
    assert(bytesWritten > 0, 'a file write makes progress');
    offset += bytesWritten;
  }
}

/**
 * GET /backup into `path`: written to `path`.tmp (owner-only: a backup holds every key), synced,
 * read back and verified (what is on disk, not only what arrived), then renamed over `path` and
 * the directory synced. On any failure the .tmp file is removed and `path` is untouched.
 */
export async function saveBackup(
  target: BackupTarget,
  path: string,
  options: BackupOptions = {},
): Promise<SavedBackup> {
  const temporary = `${path}.tmp`;
  const handle = await open(temporary, 'w', 0o600);
  let closed = false;
  try {
    const { backup, endpoint } = await receiveBackup(target, (chunk) => writeAll(handle, chunk), options);
    await handle.sync();
    await handle.close();
    closed = true;
    const onDisk = await verifyBackupFile(temporary);
    if (onDisk.sha256 !== backup.sha256)
      throw new KvError('BAD_RESPONSE', `backup: ${temporary} does not read back as it was received`, {
        definite: true,
      });
    await rename(temporary, path);
    await syncDirectory(dirname(path));
    return { ...onDisk, path, endpoint };
  } catch (error) {
    if (!closed) await handle.close().catch(() => undefined);
    await rm(temporary, { force: true });
    if (error instanceof BackupFormatError)
      throw new KvError('BAD_RESPONSE', `backup: ${temporary}: ${error.message}`, { definite: true });
    throw error;
  }
}

/** Make a rename in `directory` durable. */
async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
