/**
 * The snapshot files a durable mark of snapshot `marked` lets go: those before it. A newer file is a
 * received one the core has not accepted yet, or a copy waiting for its own mark; deleting it would
 * leave that mark without its file (the simulator found this: seed 260658). Shared by the store
 * (SnapshotFiles.pruneBefore) and the simulator's files, so the simulator checks this very rule.
 */
export function filesForgottenByMark(indexes: readonly number[], marked: number): number[] {
  return indexes.filter((index) => index < marked);
}
