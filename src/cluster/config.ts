import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { parse as parseToml } from 'smol-toml';
import { toMultiaddrs } from '../network/multiaddrs.ts';
import {
  decodeTicket,
  isJoinTicket,
  type ClusterTicket,
  type JoinTicket,
  type Ticket,
} from './discovery/ticket.ts';
import { ASPEN_VERSION } from '../api/version.ts';
import { ConfigError, TicketError } from './errors.ts';
import { LOG_LEVELS, type LogLevel } from './logger.ts';
import {
  AUTH_FAILURES_PER_WINDOW_MAX,
  QUOTA_BACKEND_BYTES_DEFAULT,
  QUOTA_BACKEND_BYTES_MAX,
  QUOTA_BACKEND_BYTES_MIN,
} from '../base/limits.ts';
import { readBoundedFile } from './bounded-file.ts';

/**
 * aspen-node configuration (docs/operations.md, "Configuration"): defaults < ASPEN_* environment < TOML config
 * file (--config) < flags. Bad configuration fails at start with one clear line.
 */
export interface NodeConfig {
  readonly nodeId: number;
  readonly host: string;
  readonly port: number;
  readonly httpHost: string;
  readonly httpPort: number;
  /**
   * The cluster cookie. Empty when a join ticket (`joinTicket`) is to supply it: startNode gets it
   * (from the data dir, or from the cluster by the join) before anything uses it.
   */
  readonly cookie: string;
  readonly cookieIsDefault: boolean;
  /**
   * --previous-cookie: during a cookie rotation, the cookie being replaced. Peers proving either
   * cookie are accepted, and this node dials proving the previous one first (docs/operations.md,
   * "Cookie rotation"). Null outside a rotation.
   */
  readonly previousCookie: string | null;
  readonly dataDir: string;
  readonly storage: 'lmdb' | 'memory';
  /**
   * --quota-backend-bytes: the state machine's bound. Once it holds this many bytes the leader
   * refuses writes that may add data (507 QUOTA_EXCEEDED); deletes still pass.
   */
  readonly quotaBackendBytes: number;
  readonly peers: readonly { readonly id: number; readonly address: string }[];
  readonly heartbeatIntervalMs: number;
  readonly electionTimeoutMinMs: number;
  readonly electionTimeoutMaxMs: number;
  readonly logLevel: LogLevel;
  /** Gossip discovery on the cookie's topic (on by default; --disable-gossip). */
  readonly gossip: boolean;
  /** mDNS on the LAN (on by default; --disable-mdns). */
  readonly mdns: boolean;
  /** `/dnsaddr` TXT discovery domain (--enable-dns-discovery --dns-discovery-domain D), or null. */
  readonly dnsDiscoveryDomain: string | null;
  /** A cluster ticket to join with (its cookie and bootstrap addresses), or null. */
  readonly ticket: ClusterTicket | null;
  /** A join ticket (version 3: a single-use join credential instead of the cookie), or null. */
  readonly joinTicket: JoinTicket | null;
  /** Host names (lower case) the HTTP API serves besides IP literals and localhost (--http-allowed-hosts). */
  readonly httpAllowedHosts: readonly string[];
  /**
   * --insecure: a cookie shorter than COOKIE_CHARS_MIN, the default cookie off loopback, or an HTTP
   * API off loopback without --auth-tokens, is accepted (with a warning).
   */
  readonly insecure: boolean;
  /** --auth-tokens FILE: bearer tokens and roles for the HTTP API (null: the API is open). */
  readonly authTokensFile: string | null;
  /** --open-health: /health and /metrics/prometheus answer without a token. */
  readonly openHealth: boolean;
  /** --auth-failures-max: failed authentications per source address and minute before 429. */
  readonly authFailuresMax: number;
  /** --http-tls-cert FILE: the HTTP API's certificate (chain), PEM; with httpTlsKey, or both null (plain HTTP). */
  readonly httpTlsCert: string | null;
  /** --http-tls-key FILE: that certificate's private key, PEM. */
  readonly httpTlsKey: string | null;
  /**
   * --restore FILE: before starting, seed the empty data dir from this backup as a new one-node
   * cluster of this node (src/cluster/restore.ts); null for a normal start.
   */
  readonly restore: string | null;
}

export const DEFAULT_COOKIE = 'aspen-cookie';
/** Shortest cookie accepted without --insecure: the cookie is the cluster's only secret. */
export const COOKIE_CHARS_MIN = 16;
export const PEERS_MAX = 64;
/** The largest --auth-failures-max. */
export const AUTH_FAILURES_MAX_LIMIT = 1_000_000;

function integerIn(text: string, what: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${what} must be an integer in [${min}, ${max}], got "${text}"`);
  }
  return value;
}

function hostPort(text: string, what: string): { host: string; port: number } {
  const match = /^([0-9A-Za-z.\-:[\]]+):(\d{1,5})$/.exec(text);
  if (match === null) throw new ConfigError(`${what} must be host:port, got "${text}"`);
  return { host: match[1] ?? '', port: integerIn(match[2] ?? '', `${what} port`, 0, 65_535) };
}

function peer(text: string): { id: number; address: string } {
  const at = text.indexOf('@');
  if (at < 1) throw new ConfigError(`--peers takes ID@ADDRESS (multiaddr or host:port), got "${text}"`);
  return {
    id: integerIn(text.slice(0, at), '--peers node id', 1, Number.MAX_SAFE_INTEGER),
    address: text.slice(at + 1),
  };
}

function command(): Command {
  const program = new Command('aspen-node')
    .description('Run one Aspen node: Raft over libp2p with the HTTP control-plane API')
    .version(ASPEN_VERSION, '--version', 'print the version and exit')
    .exitOverride()
    .configureOutput({
      writeErr: () => undefined,
      writeOut: (text) => {
        process.stdout.write(text);
      },
    })
    .addOption(new Option('--node-id <id>', "this node's Raft id (>= 1), required").env('ASPEN_NODE_ID'))
    .addOption(
      new Option('--port <port>', 'Raft transport port: QUIC on this UDP port, TCP on this TCP port')
        .env('ASPEN_PORT')
        .default('26000'),
    )
    .addOption(
      new Option('--host <host>', 'Raft transport listen host').env('ASPEN_HOST').default('127.0.0.1'),
    )
    .addOption(
      new Option('--http-addr <host:port>', 'HTTP API address')
        .env('ASPEN_HTTP_ADDR')
        .default('127.0.0.1:8080'),
    )
    .addOption(
      new Option('--cookie <cookie>', 'shared cluster secret').env('ASPEN_COOKIE').default(DEFAULT_COOKIE),
    )
    .addOption(
      new Option(
        '--previous-cookie <cookie>',
        'during a cookie rotation, the cookie being replaced (accepted as well as --cookie)',
      ).env('ASPEN_PREVIOUS_COOKIE'),
    )
    .addOption(
      new Option('--data-dir <dir>', 'data directory (default ./data/node-<id>)').env('ASPEN_DATA_DIR'),
    )
    .addOption(
      new Option('--storage <kind>', 'lmdb or memory')
        .env('ASPEN_STORAGE')
        .choices(['lmdb', 'memory'])
        .default('lmdb'),
    )
    .addOption(
      new Option(
        '--quota-backend-bytes <bytes>',
        'the state machine holds at most this many bytes: past it the leader refuses writes that may add data (507 QUOTA_EXCEEDED); deletes still pass',
      )
        .env('ASPEN_QUOTA_BACKEND_BYTES')
        .default(String(QUOTA_BACKEND_BYTES_DEFAULT)),
    )
    .addOption(new Option('--peers <ID@ADDRESS...>', 'static peers (repeatable)').env('ASPEN_PEERS'))
    .addOption(
      new Option('--heartbeat-interval-ms <ms>', 'leader heartbeat interval')
        .env('ASPEN_HEARTBEAT_INTERVAL_MS')
        .default('100'),
    )
    .addOption(
      new Option('--election-timeout-min-ms <ms>', 'shortest election timeout')
        .env('ASPEN_ELECTION_TIMEOUT_MIN_MS')
        .default('1000'),
    )
    .addOption(
      new Option('--election-timeout-max-ms <ms>', "longest election timeout (also /health's bound)")
        .env('ASPEN_ELECTION_TIMEOUT_MAX_MS')
        .default('2000'),
    )
    .addOption(
      new Option('--log-level <level>', 'least severe level logged (JSON lines on stderr)')
        .env('ASPEN_LOG_LEVEL')
        .choices(LOG_LEVELS)
        .default('info'),
    )
    .addOption(
      new Option(
        '--restore <file>',
        'seed the empty --data-dir from this backup (aspen backup save) as a new one-node cluster of this node, then run; restart without it',
      ),
    );
  return withSecurityOptions(withDiscoveryOptions(program));
}

/** The discovery flags: tickets, gossip, mDNS and DNS. */
function withDiscoveryOptions(program: Command): Command {
  return program
    .addOption(
      new Option(
        '--ticket <ticket>',
        'join the cluster of this ticket: a join ticket (aspen ticket --node-id N) or a cookie ticket (GET /cluster-ticket)',
      ).env('ASPEN_TICKET'),
    )
    .addOption(
      new Option('--disable-gossip', 'no gossip discovery: static peers and member addresses only').env(
        'ASPEN_DISABLE_GOSSIP',
      ),
    )
    .addOption(new Option('--disable-mdns', 'no mDNS discovery on the LAN').env('ASPEN_DISABLE_MDNS'))
    .addOption(
      new Option(
        '--enable-dns-discovery',
        'find bootstrap peers in /dnsaddr TXT records of --dns-discovery-domain',
      ).env('ASPEN_ENABLE_DNS_DISCOVERY'),
    )
    .addOption(
      new Option(
        '--dns-discovery-domain <domain>',
        'domain whose _dnsaddr TXT records list bootstrap peers',
      ).env('ASPEN_DNS_DISCOVERY_DOMAIN'),
    );
}

/** HTTP host names, --insecure and the config file. */
function withSecurityOptions(program: Command): Command {
  return program
    .addOption(
      new Option(
        '--http-allowed-hosts <names...>',
        'host names the HTTP API answers to besides IP addresses and localhost (DNS rebinding protection)',
      ).env('ASPEN_HTTP_ALLOWED_HOSTS'),
    )
    .addOption(
      new Option(
        '--insecure',
        `accept a cookie shorter than ${COOKIE_CHARS_MIN} characters, the default cookie off loopback, or an HTTP API off loopback without --auth-tokens`,
      ).env('ASPEN_INSECURE'),
    )
    .addOption(
      new Option(
        '--auth-tokens <file>',
        'bearer tokens and roles for the HTTP API (aspen-node tokens add NAME ROLE --auth-tokens FILE); reloaded on SIGHUP',
      ).env('ASPEN_AUTH_TOKENS'),
    )
    .addOption(
      new Option('--open-health', '/health and /metrics/prometheus answer without a token').env(
        'ASPEN_OPEN_HEALTH',
      ),
    )
    .addOption(
      new Option(
        '--auth-failures-max <count>',
        'failed authentications per source address and minute before every call from it gets 429',
      )
        .env('ASPEN_AUTH_FAILURES_MAX')
        .default(String(AUTH_FAILURES_PER_WINDOW_MAX)),
    )
    .addOption(
      new Option(
        '--http-tls-cert <file>',
        'serve the HTTP API over TLS (https) with this PEM certificate chain; needs --http-tls-key; reloaded on SIGHUP',
      ).env('ASPEN_HTTP_TLS_CERT'),
    )
    .addOption(
      new Option('--http-tls-key <file>', 'the PEM private key of --http-tls-cert').env('ASPEN_HTTP_TLS_KEY'),
    )
    .addOption(
      new Option('--config <file>', 'TOML file with the same settings (keys like node-id or node_id)').env(
        'ASPEN_CONFIG',
      ),
    );
}

/** Largest config file read. */
export const CONFIG_FILE_BYTES_MAX = 64 * 1024;
/** Deepest nesting of arrays and tables in a config file (settings are flat; `peers` is one array). */
export const CONFIG_TOML_DEPTH_MAX = 2;

/**
 * Read at most CONFIG_FILE_BYTES_MAX + 1 bytes of a regular file: /dev/zero, a FIFO (opened without
 * blocking) or a directory is refused before anything is read, a larger file after the bound.
 */
export function readConfigFile(path: string): string {
  return readBoundedFile(path, '--config', CONFIG_FILE_BYTES_MAX);
}

/** Settings that take a whole number (TOML integers, never floats or strings). */
const INTEGER_SETTINGS: ReadonlySet<string> = new Set([
  'nodeId',
  'port',
  'heartbeatIntervalMs',
  'electionTimeoutMinMs',
  'electionTimeoutMaxMs',
  'authFailuresMax',
  'quotaBackendBytes',
]);

/** A TOML value as the option takes it (text, texts or a boolean), or a one-line error naming the key. */
function tomlValue(path: string, key: string, option: Option, value: unknown): string | string[] | boolean {
  const attribute = option.attributeName();
  const wrong = (expected: string): ConfigError =>
    new ConfigError(`--config ${path}: "${key}" must be ${expected}, got ${describeToml(value)}`);
  if (option.isBoolean()) {
    if (typeof value !== 'boolean') throw wrong('true or false');
    return value;
  }
  if (option.variadic) {
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string'))
      throw wrong('an array of strings');
    return value;
  }
  if (INTEGER_SETTINGS.has(attribute)) {
    if (typeof value !== 'bigint') throw wrong('an integer');
    return value.toString();
  }
  if (typeof value !== 'string') throw wrong('a string');
  return value;
}

function describeToml(value: unknown): string {
  if (typeof value === 'bigint') return `the integer ${value.toString()}`;
  if (typeof value === 'number') return `the number ${value}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value.slice(0, 64))}`;
  if (typeof value === 'boolean') return `the boolean ${value}`;
  if (Array.isArray(value)) return 'an array';
  return value instanceof Date ? 'a date' : 'a table';
}

/** Apply a TOML config file under the flags: it overrides defaults and environment, never the command line. */
function applyConfigFile(program: Command, path: string): void {
  const text = readConfigFile(path);
  let table: Record<string, unknown>;
  try {
    table = parseToml(text, {
      integersAsBigInt: true,
      unsafeKeyBehaviour: 'throw',
      maxDepth: CONFIG_TOML_DEPTH_MAX,
    });
  } catch (error) {
    throw new ConfigError(
      `--config ${path} is not valid TOML: ${error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error)}`,
    );
  }
  const names = new Map(program.options.map((option) => [option.attributeName(), option]));
  for (const [key, value] of Object.entries(table)) {
    const attribute = key.replace(/[-_]([a-z])/g, (_match, letter: string) => letter.toUpperCase());
    const option = names.get(attribute);
    if (option === undefined || attribute === 'config')
      throw new ConfigError(`--config ${path}: unknown setting "${key}"`);
    const typed = tomlValue(path, key, option, value);
    if (program.getOptionValueSource(attribute) === 'cli') continue;
    program.setOptionValueWithSource(attribute, typed, 'config');
  }
}

/** Parse argv (without the node and script entries) and the environment into a checked NodeConfig. */
export function parseNodeConfig(argv: readonly string[]): NodeConfig {
  const program = command();
  try {
    program.parse([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError)
      throw new ConfigError(
        error.message.replace(/^error: /, ''),
        error.code === 'commander.helpDisplayed' || error.code === 'commander.version',
      );
    throw error;
  }
  const configPath = program.opts<{ config?: string }>().config;
  if (configPath !== undefined) applyConfigFile(program, configPath);
  const options = program.opts<Record<string, string | string[] | boolean | undefined>>();
  // Commander turns a boolean flag on whenever its variable is set; read the variable's value instead.
  for (const option of program.options) {
    const name = option.attributeName();
    if (option.isBoolean() && option.envVar !== undefined && program.getOptionValueSource(name) === 'env')
      options[name] = process.env[option.envVar];
  }
  const text = (name: string): string => {
    const value = options[name];
    if (typeof value !== 'string')
      throw new ConfigError(
        `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)} is required`,
      );
    return value;
  };
  const nodeId = integerIn(text('nodeId'), '--node-id', 1, Number.MAX_SAFE_INTEGER);
  const http = hostPort(text('httpAddr'), '--http-addr');
  const peersOption = options.peers;
  const peerTexts =
    typeof peersOption === 'string' ? peersOption.split(',') : Array.isArray(peersOption) ? peersOption : [];
  if (peerTexts.length > PEERS_MAX) throw new ConfigError(`at most ${PEERS_MAX} --peers`);
  const config: NodeConfig = {
    nodeId,
    host: text('host'),
    port: integerIn(text('port'), '--port', 0, 65_535),
    httpHost: http.host,
    httpPort: http.port,
    cookie: text('cookie'),
    cookieIsDefault: text('cookie') === DEFAULT_COOKIE,
    previousCookie: options.previousCookie === undefined ? null : text('previousCookie'),
    dataDir: options.dataDir === undefined ? `./data/node-${nodeId}` : text('dataDir'),
    storage: text('storage') === 'memory' ? 'memory' : 'lmdb',
    quotaBackendBytes: integerIn(
      text('quotaBackendBytes'),
      '--quota-backend-bytes',
      QUOTA_BACKEND_BYTES_MIN,
      QUOTA_BACKEND_BYTES_MAX,
    ),
    peers: peerTexts.map(peer),
    heartbeatIntervalMs: integerIn(text('heartbeatIntervalMs'), '--heartbeat-interval-ms', 2, 60_000),
    electionTimeoutMinMs: integerIn(text('electionTimeoutMinMs'), '--election-timeout-min-ms', 10, 600_000),
    electionTimeoutMaxMs: integerIn(text('electionTimeoutMaxMs'), '--election-timeout-max-ms', 10, 600_000),
    logLevel: text('logLevel') as NodeConfig['logLevel'],
    gossip: !flag(options.disableGossip),
    mdns: !flag(options.disableMdns),
    dnsDiscoveryDomain: dnsDomain(flag(options.enableDnsDiscovery), options.dnsDiscoveryDomain),
    ticket: null,
    joinTicket: null,
    insecure: flag(options.insecure),
    httpAllowedHosts: allowedHosts(options.httpAllowedHosts),
    authTokensFile: options.authTokens === undefined ? null : text('authTokens'),
    openHealth: flag(options.openHealth),
    authFailuresMax: integerIn(text('authFailuresMax'), '--auth-failures-max', 1, AUTH_FAILURES_MAX_LIMIT),
    httpTlsCert: options.httpTlsCert === undefined ? null : text('httpTlsCert'),
    httpTlsKey: options.httpTlsKey === undefined ? null : text('httpTlsKey'),
    restore: options.restore === undefined ? null : text('restore'),
  };
  const final = withTicket(config, options.ticket, program.getOptionValueSource('cookie') === 'default');
  checkPreviousCookie(final);
  checkRestore(final);
  return final;
}

/**
 * --restore seeds a data dir as a new cluster whose one member is this node at --host:--port (the
 * address recorded in its configuration, where nodes added later reach it).
 */
function checkRestore(config: NodeConfig): void {
  if (config.restore === null) return;
  if (config.restore.length === 0) throw new ConfigError('--restore needs the backup FILE');
  if (config.storage !== 'lmdb') throw new ConfigError('--restore seeds a data dir: it needs --storage lmdb');
  if (config.ticket !== null || config.joinTicket !== null)
    throw new ConfigError('--restore starts a new cluster: it cannot join one with --ticket');
  if (config.port === 0)
    throw new ConfigError(
      "--restore records this node's Raft address in the new configuration: give a fixed --port, not 0",
    );
  if (config.host === '0.0.0.0' || config.host === '::')
    throw new ConfigError(
      `--restore records this node's Raft address in the new configuration: give a --host other nodes can reach, not ${config.host}`,
    );
}

/**
 * A cookie ticket brings its cookie; a cookie given as well must be the same one. A join ticket
 * brings none: the cluster hands it over at start (so the cookie checks do not apply here: the
 * cluster's cookie passed them where it was set), and --cookie with one is refused.
 */
function withTicket(
  config: NodeConfig,
  text: string | string[] | boolean | undefined,
  cookieIsDefaulted: boolean,
): NodeConfig {
  checkConfig(config);
  if (typeof text !== 'string') {
    checkCookie(config);
    return config;
  }
  let ticket: Ticket;
  try {
    ticket = decodeTicket(text.trim());
  } catch (error) {
    throw new ConfigError(`--ticket: ${error instanceof TicketError ? error.message : String(error)}`);
  }
  if (isJoinTicket(ticket)) {
    if (!cookieIsDefaulted)
      throw new ConfigError(
        '--cookie cannot be given with a join ticket: the cluster hands its cookie to the node (drop --cookie)',
      );
    return { ...config, cookie: '', cookieIsDefault: false, joinTicket: ticket };
  }
  if (!cookieIsDefaulted && ticket.clusterId !== config.cookie)
    throw new ConfigError(
      '--ticket belongs to another cluster than --cookie (drop --cookie: the ticket carries it)',
    );
  const joined = {
    ...config,
    cookie: ticket.clusterId,
    cookieIsDefault: ticket.clusterId === DEFAULT_COOKIE,
    ticket,
  };
  checkCookie(joined);
  return joined;
}

/** Loopback hosts: nothing off this machine reaches a node listening there. */
export function isLoopbackHost(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '::1' || host === 'localhost';
}

/**
 * The cookie is the cluster's only secret: at least COOKIE_CHARS_MIN characters unless --insecure.
 * The default cookie is public, so it is accepted only where nothing else can reach the node.
 */
function checkCookie(config: NodeConfig): void {
  checkSecret(config, '--cookie', config.cookie);
}

/**
 * --previous-cookie is held to the rules of --cookie (the nodes not yet restarted still trust it),
 * and must differ from it: the same cookie twice would be no rotation, only a typo.
 */
function checkPreviousCookie(config: NodeConfig): void {
  const previous = config.previousCookie;
  if (previous === null) return;
  if (previous.length === 0) throw new ConfigError('--previous-cookie must not be empty');
  if (previous === config.cookie)
    throw new ConfigError(
      '--previous-cookie must differ from --cookie (the cookie being replaced, and the new one)',
    );
  checkSecret(config, '--previous-cookie', previous);
}

/** The length and default-cookie rules of a cookie given as `flag` (the message never holds the cookie). */
function checkSecret(config: NodeConfig, flag: string, cookie: string): void {
  if (config.insecure) return;
  if (cookie === DEFAULT_COOKIE) {
    // A joined node's stored cookie replaces a defaulted --cookie (src/cluster/join.ts).
    if (isLoopbackHost(config.host) || (flag === '--cookie' && hasStoredCookie(config))) return;
    throw new ConfigError(
      `the default cookie is public and cannot protect a node on ${config.host}: set ${flag} to a secret of at least ${COOKIE_CHARS_MIN} characters (or pass --insecure)`,
    );
  }
  const characters = cookie.length;
  if (characters < COOKIE_CHARS_MIN) {
    const counted = `${characters} character${characters === 1 ? '' : 's'}`;
    throw new ConfigError(
      `${flag} is too short: ${counted}; the cookie is the cluster's only secret and needs at least ${COOKIE_CHARS_MIN} (or pass --insecure)`,
    );
  }
}

/** The file where a node that joined with a join ticket keeps the cookie it was handed. */
export const COOKIE_FILE = 'cluster.cookie';

/** A node that joined with a join ticket restarts on the cookie it stored (without --cookie). */
export function hasStoredCookie(config: NodeConfig): boolean {
  return config.storage === 'lmdb' && existsSync(join(config.dataDir, COOKIE_FILE));
}

/** Boolean flags arrive as true from the command line and as text from the environment or TOML. */
function flag(value: string | string[] | boolean | undefined): boolean {
  if (value === undefined || value === false) return false;
  if (value === true) return true;
  const text = Array.isArray(value) ? (value[0] ?? '') : value;
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off|)$/i.test(text)) return false;
  throw new ConfigError(`a boolean setting must be true or false, got "${text}"`);
}

/** Names for --http-allowed-hosts: comma-separated or repeated, each a DNS name. */
export const HTTP_ALLOWED_HOSTS_MAX = 32;

function allowedHosts(value: string | string[] | boolean | undefined): string[] {
  const texts = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
  const names = texts
    .flatMap((text) => text.split(','))
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name.length > 0);
  if (names.length > HTTP_ALLOWED_HOSTS_MAX)
    throw new ConfigError(`at most ${HTTP_ALLOWED_HOSTS_MAX} --http-allowed-hosts`);
  for (const name of names) {
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name))
      throw new ConfigError(`--http-allowed-hosts: "${name.slice(0, 64)}" is not a host name`);
  }
  return names;
}

function dnsDomain(enabled: boolean, domain: string | string[] | boolean | undefined): string | null {
  if (!enabled) return null;
  if (typeof domain !== 'string' || !/^[A-Za-z0-9.-]{1,253}$/.test(domain)) {
    throw new ConfigError(
      '--enable-dns-discovery needs --dns-discovery-domain DOMAIN (letters, digits, dots, dashes)',
    );
  }
  return domain;
}

function checkConfig(config: NodeConfig): void {
  if (config.cookie.length === 0) throw new ConfigError('--cookie must not be empty');
  for (const entry of config.peers) {
    try {
      toMultiaddrs(entry.address);
    } catch {
      throw new ConfigError(
        `--peers ${entry.id}@${entry.address}: the address is not host:port or a multiaddr`,
      );
    }
  }
  if (config.electionTimeoutMinMs > config.electionTimeoutMaxMs)
    throw new ConfigError('--election-timeout-min-ms must be <= --election-timeout-max-ms');
  if (config.heartbeatIntervalMs * 2 >= config.electionTimeoutMinMs)
    throw new ConfigError('--heartbeat-interval-ms must be less than half of --election-timeout-min-ms');
  if ((config.httpTlsCert === null) !== (config.httpTlsKey === null))
    throw new ConfigError(
      `--http-tls-cert and --http-tls-key go together: give both (HTTPS) or neither (plain HTTP); only ${config.httpTlsCert === null ? '--http-tls-key' : '--http-tls-cert'} was given`,
    );
  checkHttpExposure(config);
}

/**
 * Fail-safe (like Redis's protected mode): an HTTP API that others can reach needs tokens. A
 * non-loopback --http-addr without --auth-tokens refuses to start, unless --insecure.
 */
function checkHttpExposure(config: NodeConfig): void {
  if (config.insecure || config.authTokensFile !== null || isLoopbackHost(config.httpHost)) return;
  throw new ConfigError(
    `the HTTP API on ${config.httpHost}:${config.httpPort} would let anyone who reaches it write and change membership: give --auth-tokens FILE (aspen-node tokens add NAME ROLE --auth-tokens FILE), or --insecure`,
  );
}
