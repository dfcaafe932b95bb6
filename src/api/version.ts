import { readFileSync } from 'node:fs';

/** The package's version (package.json), as `aspen-node --version` and `aspen --version` print it. */
export const ASPEN_VERSION: string = readVersion();

function readVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const version = (JSON.parse(text) as { version?: unknown }).version;
  if (typeof version !== 'string' || version.length === 0) throw new Error('package.json has no version');
  return version;
}
