import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** Tries to find a port free for both TCP and UDP (QUIC) before giving up. */
export const FREE_PORT_ATTEMPTS_MAX = 50;
/** Ports handed out lie in [PORT_MIN, the start of the ephemeral range). */
export const PORT_MIN = 10_000;
/** The ephemeral range's start when the system does not say (Linux's default). */
export const EPHEMERAL_PORT_MIN_DEFAULT = 32_768;

/**
 * The first port the system hands out for outgoing connections (Linux: ip_local_port_range). A
 * port picked inside that range can be taken by any outgoing connection (a libp2p dial, an HTTP
 * client) between the pick and the node's bind: "port already in use" under a busy test run.
 */
function ephemeralPortMin(): number {
  try {
    const first = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    return Number.isSafeInteger(first) && first > PORT_MIN + 1_000 ? first : EPHEMERAL_PORT_MIN_DEFAULT;
  } catch {
    return EPHEMERAL_PORT_MIN_DEFAULT;
  }
}

/** Whether `port` on loopback can be bound for TCP and for UDP right now. */
async function bindable(port: number): Promise<boolean> {
  const server = net.createServer();
  const tcpFree = await new Promise<boolean>((resolve) => {
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, '127.0.0.1', () => {
      resolve(true);
    });
  });
  if (!tcpFree) return false;
  const socket = dgram.createSocket('udp4');
  const udpFree = await new Promise<boolean>((resolve) => {
    socket.once('error', () => {
      resolve(false);
    });
    socket.bind(port, '127.0.0.1', () => {
      resolve(true);
    });
  });
  socket.close();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  return udpFree;
}

/**
 * A loopback port free for TCP and UDP (an Aspen node uses both), drawn at random below the
 * ephemeral range, so no outgoing connection takes it before the caller binds it.
 */
export async function freePort(): Promise<number> {
  const max = ephemeralPortMin() - 1;
  for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS_MAX; attempt += 1) {
    const port = randomInt(PORT_MIN, max + 1);
    if (await bindable(port)) return port;
  }
  throw new Error(`no port in [${PORT_MIN}, ${max}] free for both TCP and UDP`);
}

/**
 * A base port such that base+1 … base+count are all free on loopback for TCP and UDP (a local
 * cluster numbers its nodes' ports from one base), drawn as freePort draws one.
 */
export async function freePortRun(count: number): Promise<number> {
  if (!Number.isSafeInteger(count) || count < 1 || count > 100)
    throw new RangeError(`a run of 1..100 ports, not ${count}`);
  const max = ephemeralPortMin() - 1 - count;
  for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS_MAX; attempt += 1) {
    const base = randomInt(PORT_MIN, max + 1);
    let free = true;
    for (let offset = 1; offset <= count && free; offset += 1) free = await bindable(base + offset);
    if (free) return base;
  }
  throw new Error(`no run of ${count} ports in [${PORT_MIN}, ${max}] free for both TCP and UDP`);
}
