import { parentPort, workerData } from 'node:worker_threads';
import { StorageError } from './errors.ts';
import { encodeStateDatabases, openStateDatabases } from './state-databases.ts';

/**
 * Worker thread of SnapshotFiles.encode: opens a snapshot file read-only, encodes it as snapshot
 * bytes and sends them back (the buffer is transferred, not copied).
 */
const { path, index, bytesMax } = workerData as { path: string; index: number; bytesMax: number };
const state = openStateDatabases(path, true);
try {
  const encoded = encodeStateDatabases(
    state,
    bytesMax,
    (max) => new StorageError(`state machine exceeds the snapshot bound of ${max} bytes`),
  );
  if (encoded.index !== index) throw new Error(`snapshot file ${index} holds index ${encoded.index}`);
  const data = new Uint8Array(encoded.data); // its own buffer: msgpackr's may be pooled (untransferable)
  parentPort?.postMessage({ data }, [data.buffer]);
} catch (error) {
  parentPort?.postMessage({ error: error instanceof Error ? error.message : String(error) });
} finally {
  await state.env.close();
}
