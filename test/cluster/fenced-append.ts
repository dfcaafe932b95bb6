/**
 * The command a lock holder runs in test/cluster/locks-contention.test.ts (under `aspen lock`):
 * `node fenced-append.ts ENDPOINTS LOG_KEY HOLD_MS` appends "<token>:1" to LOG_KEY with the fencing
 * recipe, prints `begin <token> <pid> <lock key>`, waits HOLD_MS (or until SIGTERM: a holder told its
 * lease is lost still tries, as a paused holder would), appends "<token>:2", prints `end <token>` and
 * exits 0. An append whose fencing compare fails prints `fenced <token> <n>` and exits FENCED_EXIT.
 *
 * Each append is one Transaction: compare the lock key's create_index with the token and the log's
 * mod_index with the one just read; success sets the log to the old value plus the entry; failure
 * reads both keys, to tell a lost lock (fenced) from a log that moved (read again and retry).
 */
import { fileURLToPath } from 'node:url';
import { Compare, KvClient, Op } from '../../src/client/index.ts';

/** Exit code of a holder whose write the fencing compare refused. */
export const FENCED_EXIT = 3;
/** Appends retried after the log moved (only a fenced-out holder races the owner). */
const APPEND_ATTEMPTS_MAX = 16;
const ENTRY_SEPARATOR = ' ';

type Appended = 'appended' | 'fenced';

async function append(kv: KvClient, logKey: string, lockKey: string, token: number, entry: string) {
  for (let attempt = 0; attempt < APPEND_ATTEMPTS_MAX; attempt += 1) {
    const log = await kv.get(logKey);
    const entries = log === null ? [] : log.value.split(ENTRY_SEPARATOR);
    // A retried transaction that was applied once already: the entry is the log's last.
    if (entries[entries.length - 1] === entry) return 'appended' satisfies Appended;
    const result = await kv
      .txn()
      .if(
        Compare.createIndex(lockKey, 'equal', token),
        Compare.modIndex(logKey, 'equal', log?.mod_index ?? 0),
      )
      .then(Op.set(logKey, [...entries, entry].join(ENTRY_SEPARATOR)))
      .else(Op.get(lockKey))
      .commit();
    if (result.succeeded) return 'appended' satisfies Appended;
    const lock = result.results[0];
    if (lock === undefined || !('Get' in lock))
      throw new Error(`unexpected results ${JSON.stringify(result)}`);
    if (lock.Get?.create_index !== token) return 'fenced' satisfies Appended;
  }
  throw new Error(`append of ${entry} gave up after ${APPEND_ATTEMPTS_MAX} attempts`);
}

async function main(): Promise<number> {
  const [endpoints = '', logKey = '', holdText = ''] = process.argv.slice(2);
  const lockKey = process.env.ASPEN_LOCK_KEY ?? '';
  const token = Number(process.env.ASPEN_FENCING_TOKEN);
  const holdMs = Number(holdText);
  if (endpoints === '' || logKey === '' || lockKey === '' || !(token > 0) || !(holdMs >= 0))
    throw new Error('usage: fenced-append.ts ENDPOINTS LOG_KEY HOLD_MS (under aspen lock)');
  const kv = new KvClient({ endpoints: endpoints.split(',') });
  const woke = { bySigterm: false };
  const woken = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, holdMs);
    process.once('SIGTERM', () => {
      woke.bySigterm = true;
      clearTimeout(timer);
      resolve();
    });
  });
  try {
    if ((await append(kv, logKey, lockKey, token, `${token}:1`)) === 'fenced') {
      console.log(`fenced ${token} 1`);
      return FENCED_EXIT;
    }
    console.log(`begin ${token} ${process.pid} ${lockKey}`);
    await woken;
    if ((await append(kv, logKey, lockKey, token, `${token}:2`)) === 'fenced') {
      console.log(`fenced ${token} 2`);
      return FENCED_EXIT;
    }
    console.log(`end ${token}${woke.bySigterm ? ' terminated' : ''}`);
    return 0;
  } finally {
    kv.close();
  }
}

// Run as a command only (the test imports FENCED_EXIT).
if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = await main();
