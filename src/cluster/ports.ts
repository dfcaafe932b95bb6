import dgram from 'node:dgram';
import net from 'node:net';
import { firstLine, StartError } from './errors.ts';

export type Role = 'raft' | 'http';
export type Protocol = 'TCP' | 'UDP';

/** One line for a listen that failed: "port 26001 is already in use (raft, TCP)". */
export function listenError(
  error: unknown,
  host: string,
  port: number,
  role: Role,
  protocol: Protocol,
): StartError {
  const code = error instanceof Error && 'code' in error ? error.code : undefined;
  const where = `cannot listen on ${host}:${port} (${role}, ${protocol})`;
  switch (code) {
    case 'EADDRINUSE':
      return new StartError(`port ${port} is already in use (${role}, ${protocol})`, { cause: error });
    case 'EADDRNOTAVAIL':
      return new StartError(`${where}: ${host} is not an address of this machine (EADDRNOTAVAIL)`, {
        cause: error,
      });
    case 'EACCES':
      return new StartError(`${where}: permission denied (EACCES)`, { cause: error });
    default:
      return new StartError(`${where}: ${firstLine(error)}`, { cause: error });
  }
}

/** Bind `port` on `host` and let go, so that a port in use is named before libp2p buries it in a stack trace. */
export async function probePort(host: string, port: number, role: Role, protocol: Protocol): Promise<void> {
  if (port === 0) return;
  const error = await (protocol === 'TCP' ? tryTcp(host, port) : tryUdp(host, port));
  if (error !== null) throw listenError(error, host, port, role, protocol);
}

function tryTcp(host: string, port: number): Promise<Error | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (error) => {
      resolve(error);
    });
    server.listen({ host, port, exclusive: true }, () => {
      server.close(() => {
        resolve(null);
      });
    });
  });
}

function tryUdp(host: string, port: number): Promise<Error | null> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    socket.once('error', (error) => {
      socket.removeAllListeners();
      resolve(error);
    });
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.close(() => {
        resolve(null);
      });
    });
  });
}

/** libp2p reports failed listens as one multi-line message with stack traces: keep the first cause, on one line. */
export function endpointError(
  error: unknown,
  config: { readonly host: string; readonly port: number },
): StartError {
  const text = error instanceof Error ? error.message : String(error);
  const inUse = /\/(tcp|udp)\/(\d+)[^\n:]*: [^\n]*(EADDRINUSE|Address already in use)/.exec(text);
  if (inUse !== null)
    return new StartError(
      `port ${inUse[2] ?? config.port} is already in use (raft, ${inUse[1] === 'udp' ? 'UDP' : 'TCP'})`,
      { cause: error },
    );
  const failed = /^\s*(\/\S+): (.+)$/m.exec(text);
  const reason = failed === null ? firstLine(error) : `${failed[1] ?? ''}: ${failed[2] ?? ''}`;
  return new StartError(`cannot start the raft endpoint on ${config.host}:${config.port}: ${reason}`, {
    cause: error,
  });
}
