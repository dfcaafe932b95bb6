export { AssertionError, assert } from '../base/assert.ts';
export * from './config.ts';
export { RaftCore, type PeerStatus, type ProposeAccepted, type RaftStatus } from './core.ts';
export * from './errors.ts';
export { entrySizeBytes } from './log.ts';
export { SeededPrng, type Prng } from './prng.ts';
export * from './quorum.ts';
export * from './types.ts';
