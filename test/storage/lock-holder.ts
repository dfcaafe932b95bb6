/**
 * Holds a data dir for data-dir-lock.test.ts: opens LmdbStorage on argv[2], applies one write to
 * the state machine, prints `HELD <pid>` and waits until the parent kills it.
 */
import { LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { applyPlain } from '../support/apply.ts';

const dataDir = process.argv[2];
if (dataDir === undefined) throw new Error('usage: lock-holder <data-dir>');
const storage = LmdbStorage.open(dataDir);
applyPlain(new LmdbKvStateMachine(storage), 1, { Set: { key: 'held', value: 'yes' } });
process.stdout.write(`HELD ${process.pid}\n`);
setInterval(() => undefined, 60_000);
