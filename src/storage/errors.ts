/**
 * Storage that cannot be used: a data dir of another version, corruption, a lock held by another
 * process. An operating error, not a bug: the node says so in one line and does not start.
 */
export class StorageError extends Error {
  override readonly name: string = 'StorageError';
}

export function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0]?.trim() ?? '';
}
