import type { LogCommand } from '../../src/api/types.ts';
import type { ApplyOutcome, StateMachine } from '../../src/node/kv-state-machine.ts';

/** The term of the entries tests apply when the term does not matter to them (terms start at 1). */
export const TEST_TERM = 1;

/**
 * Apply `command` as the entry at `index` of term TEST_TERM, without a client session, proposed at
 * log time 0: StateMachine.apply takes all three explicitly, and most tests care about none.
 */
export function applyPlain(machine: StateMachine, index: number, command: LogCommand): ApplyOutcome {
  return machine.apply(index, command, null, 0, TEST_TERM);
}
