/**
 * Imported first by every aspen binary, so that it runs before any other module: on a Node older
 * than package.json's `engines`, one clear line and exit 1, instead of a syntax error, a stack
 * trace, or nothing at all (Node 20 has no `import.meta.main`: `node dist/bin/aspen.js` printed
 * nothing). A Node without type stripping cannot load the .ts sources at all (it fails before any
 * code runs): such a Node runs the build (`npm run build`, dist/bin/*.js), where this check speaks.
 */
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

/** package.json `engines.node` (">=22.12"); a test keeps the two equal. */
export const NODE_VERSION_MIN = '22.12.0';

/** Why `version` (e.g. "20.20.2") cannot run Aspen, or null when it can. */
export function nodeVersionProblem(version: string): string | null {
  const have = version.replace(/^v/, '').split('.').map(Number);
  const need = NODE_VERSION_MIN.split('.').map(Number);
  for (let part = 0; part < need.length; part += 1) {
    const difference = (have[part] ?? 0) - (need[part] ?? 0);
    if (Number.isNaN(difference)) break;
    if (difference > 0) return null;
    if (difference < 0)
      return `needs Node >= ${NODE_VERSION_MIN} (package.json "engines"); this is Node ${version}: install a newer Node (https://nodejs.org), or run it with the one npm installed (npx, npm run)`;
  }
  return null;
}

/** Whether the module of `meta` is the program node was started with (`import.meta.main` before Node 22.18/24.2). */
export function isMain(meta: ImportMeta): boolean {
  const main = (meta as { main?: unknown }).main;
  if (typeof main === 'boolean') return main;
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(meta.url));
  } catch {
    return false;
  }
}

const problem = nodeVersionProblem(process.versions.node);
if (problem !== null) {
  const program = basename(process.argv[1] ?? 'aspen').replace(/\.[cm]?[jt]s$/, '');
  process.stderr.write(`${program}: ${problem}\n`);
  process.exit(1);
}
