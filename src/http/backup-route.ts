import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { BackupService } from '../api/contracts.ts';
import { backupChunks, backupPieces } from '../api/backup-format.ts';

/** Response headers that name the backup before its bytes arrive. */
export const BACKUP_INDEX_HEADER = 'x-aspen-backup-index';
export const BACKUP_TERM_HEADER = 'x-aspen-backup-term';
export const BACKUP_SHA256_HEADER = 'x-aspen-backup-sha256';

/**
 * GET /backup (admin; docs/api.md "Backup"): the backup file (src/api/backup-format.ts), streamed
 * in chunks with backpressure. The state machine is read whole into memory first (the snapshot
 * machinery does: at most SNAPSHOT_BYTES_MAX), so length and checksum are known before the first
 * byte and sent as headers; an error before that answers in the usual JSON shape.
 */
export function addBackupRoute(app: FastifyInstance, backup: BackupService, nowMs: () => number): void {
  app.get('/backup', async (_request, reply) => {
    const snapshot = await backup.backup();
    const pieces = backupPieces(
      { index: snapshot.index, term: snapshot.term, nodeId: snapshot.nodeId, createdAtMs: nowMs() },
      snapshot.data,
    );
    const totalBytes = pieces.head.byteLength + pieces.data.byteLength + pieces.checksum.byteLength;
    return reply
      .type('application/octet-stream')
      .header('content-length', totalBytes)
      .header('content-disposition', `attachment; filename="aspen-${snapshot.index}.backup"`)
      .header(BACKUP_INDEX_HEADER, snapshot.index)
      .header(BACKUP_TERM_HEADER, snapshot.term)
      .header(BACKUP_SHA256_HEADER, Buffer.from(pieces.checksum).toString('hex'))
      .send(Readable.from(backupChunks(pieces), { objectMode: false }));
  });
}
