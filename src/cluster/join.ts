import { join } from 'node:path';
import type { PrivateKey } from '@libp2p/interface';
import { AspenError } from '../api/errors.ts';
import type { JoinTicketAnswer } from '../api/types.ts';
import type { NodeId } from '../base/ids.ts';
import { JoinError } from '../network/errors.ts';
import {
  JOIN_COOKIE_BYTES_MAX,
  requestJoin,
  type JoinAnswer,
  type JoinRefusal,
  type JoinService,
} from '../network/join.ts';
import { readBoundedFile } from './bounded-file.ts';
import { COOKIE_FILE, hasStoredCookie, type NodeConfig } from './config.ts';
import { encodeJoinTicket, TICKET_ADDRESSES_MAX, type JoinTicket } from './discovery/ticket.ts';
import { ConfigError, firstLine, StartError, StorageError } from './errors.ts';
import type { JoinCredentials } from './join-credentials.ts';
import type { Log } from './logger.ts';
import { probePort } from './ports.ts';
import { writeSecretFile } from './secret-file.ts';

/**
 * A join ticket for `nodeId`, minted by this node (which alone can check its credential): this
 * node's own addresses, and a credential valid for `ttlSeconds` and one join.
 */
export function mintJoinTicket(
  credentials: JoinCredentials,
  self: { readonly nodeId: NodeId; readonly cookie: string; readonly addresses: readonly string[] },
  nodeId: NodeId,
  ttlSeconds: number,
): JoinTicketAnswer {
  if (nodeId === self.nodeId)
    throw new AspenError('INVALID_INPUT', `node ${nodeId} is this node: a join ticket is for another node`);
  if (Buffer.byteLength(self.cookie) > JOIN_COOKIE_BYTES_MAX)
    throw new AspenError(
      'INVALID_INPUT',
      `this cluster's cookie is longer than ${JOIN_COOKIE_BYTES_MAX} bytes: a join cannot hand it over`,
    );
  const bootstrap = self.addresses.slice(0, TICKET_ADDRESSES_MAX);
  if (bootstrap.length === 0)
    throw new AspenError('INVALID_INPUT', 'this node has no transport address to put in a ticket');
  const minted = credentials.mint(nodeId, ttlSeconds);
  if (minted === null)
    throw new AspenError(
      'TOO_MANY_REQUESTS',
      'too many join tickets of this node are pending: wait until some are used or expire',
    );
  const ticket = encodeJoinTicket({
    bootstrap,
    join: { nodeId, credential: minted.credential.toString('base64url'), expiresAtMs: minted.expiresAtMs },
  });
  return { ticket, node_id: nodeId, expires_at: minted.expiresAtMs };
}

/** The transport's join service: a redeemed credential is answered the cookie, anything else its refusal. */
export function joinService(credentials: JoinCredentials, cookie: string): JoinService {
  return (request, remotePeerId) => {
    const verdict = credentials.redeem(request, remotePeerId);
    return verdict.ok ? { ok: true, cookie } : verdict;
  };
}

function refusal(reason: JoinRefusal, ticketNodeId: NodeId, nodeId: NodeId): ConfigError {
  const fresh = `ask an admin for a new one: aspen ticket --node-id ${nodeId}`;
  switch (reason) {
    case 'expired':
      return new ConfigError(`cannot join: the join ticket has expired (${fresh})`);
    case 'used_or_unknown':
      return new ConfigError(
        `cannot join: the join ticket was used already, or the node that made it restarted since (${fresh})`,
      );
    case 'wrong_node_id':
      return new ConfigError(
        `cannot join: the join ticket is for node ${ticketNodeId}, not node ${nodeId} (start with --node-id ${ticketNodeId}, or ${fresh})`,
      );
  }
}

/** The cookie a join stored in the data dir before, or null. */
function storedCookie(config: NodeConfig): string | null {
  if (!hasStoredCookie(config)) return null;
  const path = cookiePath(config);
  const cookie = readBoundedFile(path, 'the stored cookie', JOIN_COOKIE_BYTES_MAX);
  if (cookie.length === 0)
    throw new ConfigError(`the stored cookie ${path} is empty (remove it and join with a new ticket)`);
  return cookie;
}

/**
 * The configuration with its cookie, for a node started with a join ticket (any other is returned
 * as it is): the cookie a join stored in the data dir earlier (the ticket is then not used again),
 * or a join now. The join runs before the endpoint starts, with the node's own identity, once the
 * ports are known to be free (a credential is not spent on a start that would fail); the cookie is
 * stored in <data-dir>/cluster.cookie (memory storage: kept in memory only). A refusal is a
 * ConfigError of one line; no answer, a StartError.
 */
export async function withJoinedCookie(
  config: NodeConfig,
  privateKey: PrivateKey,
  log: Log,
): Promise<NodeConfig> {
  const ticket = config.joinTicket;
  const stored = storedCookie(config);
  if (stored === null) return ticket === null ? config : await joinNow(config, ticket, privateKey, log);
  // --cookie given (never with a join ticket: refused when parsed) wins, as in a rotation, and
  // replaces the stored one so a later start without --cookie does not fall back to an old cookie.
  if (ticket === null && !config.cookieIsDefault) {
    if (stored !== config.cookie) {
      writeCookie(config, config.cookie, 'cannot replace the stored cookie');
      log(`join: the cookie stored in ${cookiePath(config)} is replaced by the one given with --cookie`);
    }
    return config;
  }
  log(
    `join: using the cookie stored in ${cookiePath(config)}${ticket === null ? '' : '; the join ticket is not used again'}`,
  );
  return { ...config, cookie: stored };
}

/** Join with `ticket` now: the ports checked free first, then the cookie asked for and kept. */
async function joinNow(
  config: NodeConfig,
  ticket: JoinTicket,
  privateKey: PrivateKey,
  log: Log,
): Promise<NodeConfig> {
  await probePort(config.host, config.port, 'raft', 'TCP');
  await probePort(config.host, config.port, 'raft', 'UDP');
  await probePort(config.httpHost, config.httpPort, 'http', 'TCP');
  log(`join: asking the node of the join ticket to admit node ${config.nodeId}`, 'debug');
  let answer: JoinAnswer;
  try {
    answer = await requestJoin({
      privateKey,
      bootstrap: ticket.bootstrap,
      request: { nodeId: config.nodeId, credential: Buffer.from(ticket.join.credential, 'base64url') },
    });
  } catch (error) {
    if (!(error instanceof JoinError)) throw error;
    throw new StartError(`cannot join: no answer from the node of the join ticket: ${error.message}`, {
      cause: error,
    });
  }
  if (!answer.ok) throw refusal(answer.reason, ticket.join.nodeId, config.nodeId);
  keepCookie(config, answer.cookie, log);
  return { ...config, cookie: answer.cookie };
}

function cookiePath(config: NodeConfig): string {
  return join(config.dataDir, COOKIE_FILE);
}

/** Write `cookie` to the data dir's cookie file; a failure is a StorageError starting with `what`. */
function writeCookie(config: NodeConfig, cookie: string, what: string, hint = ''): void {
  const path = cookiePath(config);
  try {
    writeSecretFile(path, cookie);
  } catch (error) {
    throw new StorageError(`${what} ${path}: ${firstLine(error)}${hint}`, { cause: error });
  }
}

/** Store a cookie handed over by a join in the data dir (memory storage: nowhere). */
function keepCookie(config: NodeConfig, cookie: string, log: Log): void {
  if (config.storage === 'memory') {
    log('join: admitted to the cluster; the cookie is kept in memory (--storage memory)');
    return;
  }
  writeCookie(
    config,
    cookie,
    'cannot store the cluster cookie in',
    ' (the join ticket is used up: fix this, then ask for a new one)',
  );
  log(`join: admitted to the cluster; the cookie is stored in ${cookiePath(config)}`);
}
