import { readFileSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';
import { ERROR_STATUS } from '../../src/api/errors.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { REQUEST_BODY_BYTES_MAX } from '../../src/http/errors.ts';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** A server whose engine is never reached: every request below is refused before a route runs. */
async function listening(): Promise<number> {
  const app = buildHttpServer({
    controller: {} as ClusterController,
    store: {} as KeyValueStore,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  stops.push(() => app.close());
  return (app.server.address() as net.AddressInfo).port;
}

/** Send raw bytes; the status line and the body of the answer. */
function raw(port: number, request: string): Promise<{ status: string; body: unknown }> {
  return new Promise((resolvePromise, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(request);
    });
    let answer = '';
    socket.setEncoding('utf8').on('data', (text: string) => {
      answer += text;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const split = answer.indexOf('\r\n\r\n');
      resolvePromise({
        status: answer.split('\r\n')[0] ?? '',
        body: JSON.parse(answer.slice(split + 4)) as unknown,
      });
    });
  });
}

const HOST = 'Host: 127.0.0.1\r\nConnection: close\r\n';

describe('every error body has the API shape and `definite`', () => {
  it("Fastify's and Node's own refusals: no route, bad URL, bad JSON, content type, body size, not HTTP", async () => {
    const port = await listening();
    const post = (type: string, body: string, length = Buffer.byteLength(body)): string =>
      `POST /write HTTP/1.1\r\n${HOST}Content-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n${body}`;
    const cases: [string, string, string, string][] = [
      ['no route', `GET /nope HTTP/1.1\r\n${HOST}\r\n`, '404', 'NOT_FOUND'],
      ['no such method', `DELETE /write HTTP/1.1\r\n${HOST}\r\n`, '404', 'NOT_FOUND'],
      ['bad URL', `GET /%E0%A4%A HTTP/1.1\r\n${HOST}\r\n`, '400', 'INVALID_INPUT'],
      ['unparsable JSON', post('application/json', '{bad}'), '400', 'INVALID_INPUT'],
      ['empty JSON body', post('application/json', ''), '400', 'INVALID_INPUT'],
      ['content type', post('text/plain', 'hi'), '415', 'UNSUPPORTED_MEDIA_TYPE'],
      ['body too large', post('application/json', '{}', REQUEST_BODY_BYTES_MAX + 1), '413', 'BODY_TOO_LARGE'],
      [
        'Host not allowed',
        `GET /state HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
        '421',
        'HOST_NOT_ALLOWED',
      ],
      ['not HTTP', 'GARBAGE\r\n\r\n', '400', 'INVALID_INPUT'],
      [
        'bad Content-Length',
        `GET /state HTTP/1.1\r\n${HOST}Content-Length: abc\r\n\r\n`,
        '400',
        'INVALID_INPUT',
      ],
    ];
    for (const [what, request, status, code] of cases) {
      const answer = await raw(port, request);
      expect({ what, status: answer.status.split(' ')[1], body: answer.body }).toEqual({
        what,
        status,
        body: { error: { code, message: expect.any(String) as string, definite: true } },
      });
    }
  });

  it('the status table in docs/api.md lists exactly the codes of ERROR_STATUS, each at its status', () => {
    const doc = readFileSync(resolve(import.meta.dirname, '../../docs/api.md'), 'utf8');
    const table = new Map<string, number>();
    for (const match of doc.matchAll(/^\| (\d{3}) \| ([A-Z_, ()a-z]+) \|$/gm)) {
      for (const code of (match[2] ?? '').split(',')) {
        const name = code.trim().split(' ')[0] ?? '';
        table.set(name, Number(match[1]));
      }
    }
    expect(Object.fromEntries(table)).toEqual(ERROR_STATUS);
  });
});
