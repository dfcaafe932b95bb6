import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/cluster/errors.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';

const REPO = resolve(import.meta.dirname, '../..');
const UNIT = join(REPO, 'deploy/aspen-node.service');
const ENV_FILE = join(REPO, 'deploy/aspen-node.env');
/** Where the unit expects the checkout. */
const INSTALL_DIR = '/opt/aspen/';
/** systemd-analyze (Debian's systemd package; .ci/run installs it when missing). */
const SYSTEMD_ANALYZE = 'systemd-analyze';
const RUN_TIMEOUT_MS = 30_000;
/** `systemd-analyze security`'s overall exposure, 0 (locked down) to 10; 1.6 when written. */
const EXPOSURE_MAX = 2.5;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** The unit's `Key=value` lines of [Service], every value of a repeated key. */
function serviceSettings(text: string): Map<string, string[]> {
  const service = text.slice(text.indexOf('[Service]'), text.indexOf('[Install]'));
  const settings = new Map<string, string[]>();
  for (const line of service.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match === null) continue;
    const [, key = '', value = ''] = match;
    settings.set(key, [...(settings.get(key) ?? []), value]);
  }
  return settings;
}

/**
 * `systemd-analyze verify` checks that ExecStart's program exists: a copy of the unit in a temp dir
 * with the install directory replaced by this checkout (its node_modules/.bin/node and
 * src/bin/aspen-node.ts exist).
 */
function verify(unitText: string, name = 'aspen-node.service') {
  const dir = mkdtempSync(join(tmpdir(), 'aspen-unit-'));
  dirs.push(dir);
  const path = join(dir, name);
  writeFileSync(path, unitText.replaceAll(INSTALL_DIR, `${REPO}/`));
  const run = (args: readonly string[]) =>
    spawnSync(SYSTEMD_ANALYZE, [...args, path], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
  return { verified: run(['verify']), security: run(['security', '--offline=yes']) };
}

describe('deploy/aspen-node.service', () => {
  const text = readFileSync(UNIT, 'utf8');

  it('passes systemd-analyze verify without a warning; a broken copy does not', () => {
    const { verified, security } = verify(text);
    expect(verified.error, `${SYSTEMD_ANALYZE} must be installed (apt-get install systemd)`).toBeUndefined();
    expect({ status: verified.status, stderr: verified.stderr }).toEqual({ status: 0, stderr: '' });
    const exposure = Number(/Overall exposure level for [^:]+: ([\d.]+)/.exec(security.stdout)?.[1]);
    expect(exposure, security.stdout + security.stderr).toBeLessThanOrEqual(EXPOSURE_MAX);
    const broken = verify(
      text.replace('SystemCallErrorNumber=EPERM', 'SystemCallErrorNumber=EPERMX'),
      'broken.service',
    );
    expect(broken.verified.stderr).toMatch(/Failed to parse error number/);
  });

  it('runs aspen-node as user aspen from an EnvironmentFile, with the hardening systemd offers', () => {
    const settings = serviceSettings(text);
    const one = (key: string): string | undefined => settings.get(key)?.[0];
    expect(one('ExecStart')).toBe('/opt/aspen/node_modules/.bin/node /opt/aspen/src/bin/aspen-node.ts');
    expect(one('EnvironmentFile')).toBe('/etc/aspen/aspen-node.env');
    expect(one('User')).toBe('aspen');
    expect(one('StateDirectory')).toBe('aspen');
    expect(one('ReadWritePaths')).toBe('/var/lib/aspen');
    expect(one('KillSignal')).toBe('SIGTERM');
    expect(one('Restart')).toBe('on-failure');
    expect(one('RestartPreventExitStatus')).toBe('2');
    expect(Number(one('LimitNOFILE'))).toBeGreaterThanOrEqual(65_536);
    expect(one('TimeoutStopSec')).toMatch(/^\d+s$/);
    const hardening: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectKernelLogs: 'yes',
      ProtectControlGroups: 'yes',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX AF_NETLINK',
      RestrictNamespaces: 'yes',
      RestrictSUIDSGID: 'yes',
      LockPersonality: 'yes',
      SystemCallArchitectures: 'native',
      SystemCallErrorNumber: 'EPERM',
      CapabilityBoundingSet: '',
    };
    for (const [key, value] of Object.entries(hardening)) expect([key, one(key)]).toEqual([key, value]);
    expect(settings.get('SystemCallFilter')).toEqual(['@system-service', '~@privileged']);
    // V8's JIT writes code it then runs: W^X memory would kill node at its first compile.
    expect(settings.has('MemoryDenyWriteExecute')).toBe(false);
  });
});

describe('deploy/aspen-node.env', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const name of Object.keys(process.env))
      if (!(name in saved)) Reflect.deleteProperty(process.env, name);
    Object.assign(process.env, saved);
  });

  /** The file's `NAME=value` lines. */
  function variables(): Map<string, string> {
    const lines = readFileSync(ENV_FILE, 'utf8').split('\n');
    const entries = lines
      .map((line) => /^([A-Z_]+)=(.*)$/.exec(line))
      .filter((match) => match !== null)
      .map((match): [string, string] => [match[1] ?? '', match[2] ?? '']);
    return new Map(entries);
  }

  it('sets only variables aspen-node reads, and they configure the node its comments describe', () => {
    const source = readFileSync(join(REPO, 'src/cluster/config.ts'), 'utf8');
    const known = new Set([...source.matchAll(/\.env\(\s*'(ASPEN_[A-Z_]+)'/g)].map((match) => match[1]));
    const env = variables();
    for (const name of env.keys()) expect(known, name).toContain(name);
    for (const name of Object.keys(process.env))
      if (name.startsWith('ASPEN_')) Reflect.deleteProperty(process.env, name);
    Object.assign(process.env, Object.fromEntries(env), {
      ASPEN_COOKIE: 'a-secret-of-more-than-sixteen-characters',
    });
    expect(parseNodeConfig([])).toMatchObject({
      nodeId: 1,
      host: '10.0.0.1',
      port: 26_001,
      httpHost: '10.0.0.1',
      httpPort: 8001,
      storage: 'lmdb',
      dataDir: '/var/lib/aspen/node-1',
      authTokensFile: '/etc/aspen/tokens',
      openHealth: true,
      httpTlsCert: '/etc/aspen/http.crt',
      httpTlsKey: '/etc/aspen/http.key',
      logLevel: 'info',
    });
  });

  it('as shipped, with its cookie left empty, the node refuses to start', () => {
    for (const name of Object.keys(process.env))
      if (name.startsWith('ASPEN_')) Reflect.deleteProperty(process.env, name);
    Object.assign(process.env, Object.fromEntries(variables()));
    expect(() => parseNodeConfig([])).toThrow(ConfigError);
    expect(() => parseNodeConfig([])).toThrow(/--cookie must not be empty/);
  });
});
