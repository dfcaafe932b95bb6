/**
 * The conditional commands of the aspen CLI: `aspen cas` and `aspen txn` (docs/cli.md). Reading and
 * checking a transaction file, and printing what a transaction or a failed compare answers.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { KeyValue, TxnOp, TxnOpResult } from '../api/types.ts';
import { KvError } from '../client/errors.ts';
import type { Transaction, TxnResult } from '../client/txn.ts';

/** Largest transaction read from FILE or stdin: the server's request body bound (2 MiB). */
export const TXN_INPUT_BYTES_MAX = 2 * 1024 * 1024;
/** Characters of a bad document quoted back in an error message. */
const QUOTE_CHARS_MAX = 80;
const TXN_FIELDS: readonly string[] = ['compare', 'success', 'failure'];

/** A problem with what the user gave (exit 2). */
export class InputError extends Error {}

/** Refuses malformed UTF-8 and keeps a leading BOM (a value is stored as given). */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The whole of a stream as UTF-8, refused past `bytesMax` (each chunk counts; the loop ends there)
 * with "WHAT is over BOUND".
 */
export async function readBounded(
  stream: Readable,
  what: string,
  bytesMax: number,
  bound = `${bytesMax} bytes`,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      size += bytes.length;
      if (size > bytesMax) {
        stream.destroy();
        throw new InputError(`${what} is over ${bound}`);
      }
      chunks.push(bytes);
    }
  } catch (error) {
    if (error instanceof InputError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new InputError(`cannot read ${what}: ${code ?? (error instanceof Error ? error.message : '?')}`);
  }
  try {
    return strictUtf8.decode(Buffer.concat(chunks));
  } catch {
    throw new InputError(`${what} is not UTF-8 text`);
  }
}

/** A Transaction body from FILE, or from stdin when FILE is absent or "-". */
export async function readTransaction(file: string | undefined): Promise<Transaction> {
  const fromStdin = file === undefined || file === '-';
  const what = fromStdin ? 'stdin' : file;
  if (fromStdin && process.stdin.isTTY)
    process.stderr.write('aspen: reading a transaction from stdin (end with Ctrl-D)\n');
  const text = await readBounded(
    fromStdin ? process.stdin : createReadStream(file),
    what,
    TXN_INPUT_BYTES_MAX,
  );
  return parseTransaction(text, what);
}

/**
 * `{"compare":[…],"success":[…],"failure":[…]}`, each part optional (an empty list); anything else at
 * the top is refused here. What is inside the lists is the server's to check (400, exit 1).
 */
export function parseTransaction(text: string, what: string): Transaction {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new InputError(`${what} is not JSON: ${reason.slice(0, QUOTE_CHARS_MAX * 2)}`);
  }
  const shape = `${what}: a transaction is {"compare":[…],"success":[…],"failure":[…]}`;
  if (typeof document !== 'object' || document === null || Array.isArray(document))
    throw new InputError(`${shape}, not ${JSON.stringify(document).slice(0, QUOTE_CHARS_MAX)}`);
  const record = document as Record<string, unknown>;
  const unknown = Object.keys(record).find((name) => !TXN_FIELDS.includes(name));
  if (unknown !== undefined)
    throw new InputError(`${shape}; unknown field "${unknown.slice(0, QUOTE_CHARS_MAX)}"`);
  const list = (name: string): unknown[] => {
    const value = record[name] ?? [];
    if (!Array.isArray(value)) throw new InputError(`${shape}; "${name}" must be a list`);
    return value as unknown[];
  };
  // The lists go to the server as they are: it validates every compare and op.
  return {
    compare: list('compare') as unknown as Transaction['compare'],
    success: list('success') as unknown as Transaction['success'],
    failure: list('failure') as unknown as Transaction['failure'],
  };
}

function counters(record: Pick<KeyValue, 'version' | 'mod_index'>): [string, string] {
  return [String(record.version), String(record.mod_index)];
}

/** The key an op names (a Scan: its prefix), to label its result. */
function opKey(op: TxnOp | undefined): string {
  if (op === undefined) return '?';
  if ('Set' in op) return op.Set.key;
  if ('Delete' in op) return op.Delete.key;
  if ('Get' in op) return op.Get.key;
  return `${op.Scan.prefix}*`;
}

/** Table rows for one op result: # OP KEY RESULT VERSION MOD_INDEX VALUE (a Scan: one row per entry). */
function resultRows(result: TxnOpResult, op: TxnOp | undefined, number: string): string[][] {
  if ('Set' in result) return [[number, 'set', result.Set.key, 'written', '-', '-', '']];
  if ('Delete' in result)
    return [
      [number, 'delete', result.Delete.key, result.Delete.deleted ? 'deleted' : 'absent', '-', '-', ''],
    ];
  if ('Get' in result) {
    const found = result.Get;
    if (found === null) return [[number, 'get', opKey(op), 'absent', '-', '-', '']];
    return [[number, 'get', found.key, 'found', ...counters(found), found.value]];
  }
  const { entries, is_truncated } = result.Scan;
  const rows = entries.map((entry) => [number, 'scan', entry.key, 'found', ...counters(entry), entry.value]);
  if (entries.length === 0) rows.push([number, 'scan', opKey(op), 'no entries', '-', '-', '']);
  if (is_truncated) rows.push([number, 'scan', opKey(op), 'truncated', '-', '-', '']);
  return rows;
}

/** The first line, then a table of the results of the branch that ran (table draws the columns). */
export function txnText(
  txn: Transaction,
  result: TxnResult,
  table: (header: readonly string[], rows: readonly (readonly string[])[]) => string,
): string {
  const ran = result.succeeded ? txn.success : txn.failure;
  const head = result.succeeded
    ? `succeeded: the compares held, success ran (revision ${result.revision})`
    : `not succeeded: a compare failed, failure ran (revision ${result.revision})`;
  if (result.results.length === 0) return head;
  const rows = result.results.flatMap((opResult, at) => resultRows(opResult, ran[at], String(at + 1)));
  return `${head}\n${table(['#', 'OP', 'KEY', 'RESULT', 'VERSION', 'MOD_INDEX', 'VALUE'], rows)}`;
}

/** `aspen cas` arguments: KEY EXPECTED NEW, or KEY NEW with --absent. */
export function casArguments(
  args: readonly string[],
  absent: boolean,
): { key: string; expected: string | null; value: string } {
  const [key = '', second = '', third] = args;
  if (absent) {
    if (third !== undefined) throw new InputError('cas --absent takes KEY NEW (no EXPECTED)');
    return { key, expected: null, value: second };
  }
  if (third === undefined) throw new InputError('cas takes KEY EXPECTED NEW (or --absent KEY NEW)');
  return { key, expected: second, value: third };
}

/** The error a failed compare ends `aspen cas` with (exit 5): what it found instead. */
export function compareFailed(key: string, current: KeyValue | null): KvError {
  const found =
    current === null
      ? `"${key}" does not exist`
      : `"${key}" holds another value (version ${current.version}, mod_index ${current.mod_index})`;
  return new KvError('COMPARE_FAILED', `nothing written: ${found}`, { definite: true, current });
}
