import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';

/** Services for an HTTP server under test whose other routes are not used: every call rejects. */
const never = () => Promise.reject(new Error('unused'));

export const unusedController: ClusterController = {
  init: never,
  addLearner: never,
  changeMembership: never,
  removeLearner: never,
  triggerSnapshot: never,
  getMetrics: never,
  currentState: never,
};

export const unusedStore: KeyValueStore = { write: never, read: never, delete: never, scan: never };
