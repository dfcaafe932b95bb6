import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCRIPT_EXIT_USAGE } from '../../src/base/script-args.ts';

const REPO = resolve(import.meta.dirname, '../..');
const RUN_TIMEOUT_MS = 30_000;

/** The npm scripts that take options (package.json), by the file each runs. */
const SCRIPTS = [
  ['sim', 'src/sim/cli.ts'],
  ['sim:mutants', 'src/sim/mutants.ts'],
  ['bench', 'src/bench/bench.ts'],
  ['bench:core', 'src/sim/bench-core.ts'],
  ['bench:storage', 'bench/storage.ts'],
  ['test:crash', 'test/storage/crash-run.ts'],
] as const;

function run(file: string, args: readonly string[]) {
  return spawnSync(process.execPath, [resolve(REPO, file), ...args], {
    encoding: 'utf8',
    timeout: RUN_TIMEOUT_MS,
  });
}

describe('npm run <script> -- --help', () => {
  it.each(SCRIPTS)(
    '%s prints its usage (exit 0); an unknown option is one line and the usage (exit 64), no stack trace',
    (name, file) => {
      const help = run(file, ['--help']);
      expect(help.status, help.stderr).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^usage: npm run ${name} -- `));
      expect(help.stderr).toBe('');
      expect(run(file, ['-h']).stdout).toBe(help.stdout);
      const bad = run(file, ['--no-such-option']);
      expect(bad.status).toBe(SCRIPT_EXIT_USAGE);
      expect(bad.stdout).toBe('');
      expect(bad.stderr).toBe(`${name}: Unknown option '--no-such-option'\n\n${help.stdout}`);
    },
  );
});
