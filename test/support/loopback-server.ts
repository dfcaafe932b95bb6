import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Listen on a loopback port; `cleanups` gets the close (open connections closed too). Resolves to its URL. */
export async function listenLoopback(
  server: Server,
  cleanups: (() => Promise<void> | void)[],
): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A loopback port nothing listens on (bound once, then closed): connections are refused. */
export async function closedPort(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return url;
}
