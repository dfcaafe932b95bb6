import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { isMain, NODE_VERSION_MIN, nodeVersionProblem } from '../../src/bin/node-guard.ts';

const REPO = resolve(import.meta.dirname, '../..');
/** The machine's own Node (Debian's /usr/bin/node here), which may be older than the one npm installed. */
const SYSTEM_NODE = '/usr/bin/node';
/** tsc over src on a slow 2-core machine. */
const BUILD_TIMEOUT_MS = 240_000;
const RUN_TIMEOUT_MS = 20_000;
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('the Node version the binaries need', () => {
  it('is package.json "engines"; older versions are named in one line, newer and equal pass', () => {
    const engines = (
      JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { engines: { node: string } }
    ).engines.node;
    expect(`>=${NODE_VERSION_MIN.replace(/\.0$/, '')}`).toBe(engines);
    for (const old of ['20.20.2', 'v18.0.0', '22.11.9', '22.0.0'])
      expect(nodeVersionProblem(old)).toMatch(
        new RegExp(`^needs Node >= ${NODE_VERSION_MIN} .*this is Node ${old}:`),
      );
    for (const fine of ['22.12.0', '22.18.1', '24.21.0', 'v25.0.0'])
      expect(nodeVersionProblem(fine)).toBeNull();
  });

  it('tells the program run directly without import.meta.main, from the script path', () => {
    const script = process.argv[1] ?? '';
    expect(isMain({ url: pathToFileURL(realpathSync(script)).href } as ImportMeta)).toBe(true);
    expect(isMain({ url: pathToFileURL(join(REPO, 'src/bin/aspen.ts')).href } as ImportMeta)).toBe(false);
    expect(isMain({ main: true, url: 'file:///elsewhere.js' } as ImportMeta)).toBe(true);
    expect(isMain({ main: false, url: pathToFileURL(realpathSync(script)).href } as ImportMeta)).toBe(false);
  });

  it(
    'the build (dist/bin/*.js) prints its version on this Node, and on an older system Node one clear line and exit 1',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'aspen-dist-'));
      dirs.push(dir);
      const build = spawnSync(
        join(REPO, 'node_modules/.bin/tsc'),
        [
          '-p',
          join(REPO, 'tsconfig.build.json'),
          '--outDir',
          join(dir, 'dist'),
          '--declaration',
          'false',
          '--sourceMap',
          'false',
        ],
        { encoding: 'utf8', timeout: BUILD_TIMEOUT_MS },
      );
      expect(build.status, build.stdout + build.stderr).toBe(0);
      // The layout of a checkout: package.json (the version) and node_modules beside dist/.
      copyFileSync(join(REPO, 'package.json'), join(dir, 'package.json'));
      symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
      const run = (node: string, bin: string) =>
        spawnSync(node, [join(dir, 'dist/bin', `${bin}.js`), '--version'], {
          encoding: 'utf8',
          timeout: RUN_TIMEOUT_MS,
        });
      const systemVersion = existsSync(SYSTEM_NODE)
        ? spawnSync(SYSTEM_NODE, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim()
        : null;
      const tooOld = systemVersion !== null && nodeVersionProblem(systemVersion) !== null;
      for (const bin of ['aspen', 'aspen-node', 'aspen-local']) {
        // aspen-local takes no options (it would start a cluster): only the old Node runs it.
        if (bin !== 'aspen-local')
          expect(run(process.execPath, bin), bin).toMatchObject({ status: 0, stdout: `${VERSION}\n` });
        if (systemVersion === null || (bin === 'aspen-local' && !tooOld)) continue;
        const old = run(SYSTEM_NODE, bin);
        if (tooOld)
          expect(old, bin).toMatchObject({
            status: 1,
            stdout: '',
            stderr: `${bin}: ${nodeVersionProblem(systemVersion) ?? ''}\n`,
          });
        // A system Node new enough runs the build like ours, import.meta.main or not.
        else expect(old, bin).toMatchObject({ status: 0, stdout: `${VERSION}\n` });
      }
    },
    BUILD_TIMEOUT_MS + 60_000,
  );
});
