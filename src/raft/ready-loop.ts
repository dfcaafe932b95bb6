import type { Message, Ready } from './types.ts';

/** The core as the Ready loop drives it. */
export interface ReadySource {
  ready(): Ready;
  advance(ready: Ready): void;
}

/**
 * What a driver does with a Ready: the node (real disk, network, state machine), the unit tests'
 * cluster and the core benchmark. `persist` may call `done` at once or later (an asynchronous
 * disk); on a failure it never calls it and the Ready is abandoned, as when `apply` returns false.
 */
export interface ReadyExecutor {
  /** Write snapshot, hard state and entries in one synced write; only called when `ready.mustSync`. */
  persist(ready: Ready, done: () => void): void;
  /** Send messages of `ready` (never empty): its early ones before the persist, the rest after it. */
  send(ready: Ready, messages: readonly Message[]): void;
  /** Apply `ready.committedEntries` (possibly none) once; false abandons the Ready (the driver stopped). */
  apply(ready: Ready): boolean;
  /** After the persist and the apply, before `advance`: answer `readStates` and `readFailures`. */
  answerReads(ready: Ready): void;
  /** The Ready is done and the core advanced: the driver may step the core again. */
  advanced(): void;
}

/**
 * Run one Ready of `core` through `executor` in the contract's order (see `Ready`): early messages
 * and early applies, the synced write, then the messages that wait for it, the apply, the reads and
 * `advance`. The one Ready loop of the project: the node, the tests and the benchmark all use it.
 */
export function runReady(core: ReadySource, executor: ReadyExecutor): void {
  const ready = core.ready();
  if (ready.messages.length > 0) executor.send(ready, ready.messages);
  if (ready.applyBeforePersist && !executor.apply(ready)) return;
  if (!ready.mustSync) {
    finishReady(core, executor, ready);
    return;
  }
  executor.persist(ready, () => {
    finishReady(core, executor, ready);
  });
}

function finishReady(core: ReadySource, executor: ReadyExecutor, ready: Ready): void {
  if (ready.messagesAfterPersist.length > 0) executor.send(ready, ready.messagesAfterPersist);
  if (!ready.applyBeforePersist && !executor.apply(ready)) return;
  executor.answerReads(ready);
  core.advance(ready);
  executor.advanced();
}
