import type { Server } from 'node:http';
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
