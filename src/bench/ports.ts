import dgram from 'node:dgram';
import net from 'node:net';

/** Tries to find a port free for both TCP and UDP (QUIC) before giving up. */
export const FREE_PORT_ATTEMPTS_MAX = 50;

/** A loopback port the OS just handed out for TCP that is also free for UDP (an Aspen node uses both). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS_MAX; attempt += 1) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
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
    if (udpFree) return port;
  }
  throw new Error('no port free for both TCP and UDP');
}
