/**
 * Assertions: a broken invariant is a programmer error and stops the process loudly.
 * Operating errors (bad input, lost quorum) are typed results, never assertions.
 */
export class AssertionError extends Error {
  override readonly name = 'AssertionError';
}

export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Terms, indexes and node ids are non-negative safe integers. */
export function assertIndex(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new AssertionError(`${what} must be a non-negative safe integer, got ${value}`);
  }
}

export function assertNodeId(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new AssertionError(`${what} must be a positive safe integer node id, got ${value}`);
  }
}

export function unreachable(value: never, what: string): never {
  throw new AssertionError(`unreachable: unexpected ${what}: ${JSON.stringify(value)}`);
}
