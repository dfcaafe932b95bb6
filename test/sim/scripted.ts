import { Simulation } from '../../src/sim/simulation.ts';
import { drawSettings, type SimSettings } from '../../src/sim/settings.ts';

/** A healthy cluster of `nodeCount` nodes, scripted by the test; every checker still runs on every step. */
export function scripted(
  nodeCount: number,
  seed = 7,
  tickSkew: readonly number[] = new Array<number>(nodeCount).fill(0),
  overrides: Partial<SimSettings> = {},
): Simulation {
  const base = drawSettings(seed);
  const settings: SimSettings = {
    ...base,
    nodeCount,
    initialVoters: nodeCount,
    snapshotThresholdEntries: 10_000,
    tickSkew,
    electionTicksMin: 10,
    electionTicksMax: 20,
    heartbeatTicks: 2,
    network: { delayMsMin: 1, delayMsMax: 5, lossProbability: 0, duplicateProbability: 0 },
    diskLatencyMsMin: 1,
    diskLatencyMsMax: 3,
    ...overrides,
  };
  const simulation = new Simulation(settings, {}, { scripted: true });
  simulation.start();
  return simulation;
}
