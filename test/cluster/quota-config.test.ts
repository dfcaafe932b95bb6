import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  LMDB_MAP_SIZE_BYTES,
  QUOTA_BACKEND_BYTES_DEFAULT,
  QUOTA_BACKEND_BYTES_MIN,
} from '../../src/base/limits.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import { ConfigError } from '../../src/cluster/errors.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

const quota = (...argv: string[]): number => parseNodeConfig(['--node-id', '1', ...argv]).quotaBackendBytes;
const RANGE = `[${QUOTA_BACKEND_BYTES_MIN}, ${LMDB_MAP_SIZE_BYTES}]`;

describe('--quota-backend-bytes', () => {
  it('defaults to 8 GiB and comes from the environment, a TOML file or the flag, in that precedence', () => {
    expect(QUOTA_BACKEND_BYTES_DEFAULT).toBe(8 * 1024 ** 3);
    expect(quota()).toBe(QUOTA_BACKEND_BYTES_DEFAULT);
    const directory = mkdtempSync(join(tmpdir(), 'aspen-quota-config-'));
    directories.push(directory);
    const file = join(directory, 'aspen.toml');
    writeFileSync(file, 'quota_backend_bytes = 3145728\n');
    process.env.ASPEN_QUOTA_BACKEND_BYTES = '2097152';
    try {
      expect(quota()).toBe(2 * 1024 ** 2);
      expect(quota('--config', file)).toBe(3 * 1024 ** 2);
      expect(quota('--config', file, '--quota-backend-bytes', '4194304')).toBe(4 * 1024 ** 2);
    } finally {
      delete process.env.ASPEN_QUOTA_BACKEND_BYTES;
    }
    writeFileSync(file, 'quota-backend-bytes = 17179869184\n');
    expect(quota('--config', file)).toBe(LMDB_MAP_SIZE_BYTES);
    writeFileSync(file, 'quota_backend_bytes = "8GiB"\n');
    expect(() => quota('--config', file)).toThrow(
      new ConfigError(`--config ${file}: "quota_backend_bytes" must be an integer, got the string "8GiB"`),
    );
  });

  it('takes 1 MiB to the LMDB map size (16 GiB), and refuses anything else with one line', () => {
    expect(quota('--quota-backend-bytes', String(QUOTA_BACKEND_BYTES_MIN))).toBe(QUOTA_BACKEND_BYTES_MIN);
    expect(quota('--quota-backend-bytes', String(LMDB_MAP_SIZE_BYTES))).toBe(LMDB_MAP_SIZE_BYTES);
    for (const text of [
      String(QUOTA_BACKEND_BYTES_MIN - 1),
      String(LMDB_MAP_SIZE_BYTES + 1),
      '0',
      '-1',
      '8GiB',
      '1e9',
      '',
    ]) {
      expect(() => quota('--quota-backend-bytes', text), text).toThrow(
        new ConfigError(`--quota-backend-bytes must be an integer in ${RANGE}, got "${text}"`),
      );
    }
  });
});
