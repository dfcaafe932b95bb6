import { scriptOptions } from '../../src/base/script-args.ts';
import { runCrashTest } from './crash-harness.ts';

const USAGE = `usage: npm run test:crash -- [--rounds N] [--seed S]   SIGKILL rounds (default 1000) from seed S (default 1)
`;
const values = scriptOptions('test:crash', USAGE, {
  rounds: { type: 'string', default: '1000' },
  seed: { type: 'string', default: '1' },
});
const started = performance.now();
const report = await runCrashTest(Number(values.rounds), Number(values.seed));
const seconds = ((performance.now() - started) / 1000).toFixed(1);
process.stdout.write(
  `crash test: ${report.rounds} SIGKILL rounds in ${seconds} s, ${report.sent} writes sent, ${report.acknowledged} acknowledged, ${report.problems.length} problems\n`,
);
for (const problem of report.problems.slice(0, 20)) process.stdout.write(`  ${problem}\n`);
process.exit(report.problems.length === 0 ? 0 : 1);
