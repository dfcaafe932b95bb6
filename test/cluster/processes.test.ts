import { afterAll, describe, expect, it } from 'vitest';
import { eventually, formCluster, peerIdOf, post, ProcessCluster } from './process-harness.ts';

/** Sends of the first write (each bounded by the 5 s forward timeout). */
const FIRST_WRITE_ATTEMPTS_MAX = 3;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

describe('aspen-node processes', () => {
  it("the README's walkthrough works across processes; a node with another cookie cannot join", async () => {
    const nodes = await Promise.all([1, 2, 3].map((id) => cluster.start(id)));
    const [one, two, three] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
    await formCluster(cluster, nodes);
    // Like an operator repeating the README's curl: a write forwarded just after the membership
    // change may time out (504, indeterminate) on a starved CI machine; a Set may be sent again.
    const greet = { command: { Set: { key: 'greeting', value: 'hello world' } } };
    let status = 0;
    for (let attempt = 1; attempt <= FIRST_WRITE_ATTEMPTS_MAX && status !== 200; attempt += 1)
      status = (await post(`${two.http}/write`, greet)).status;
    expect(status).toBe(200);
    const read = await fetch(`${three.http}/read?key=greeting`);
    expect(await read.json()).toMatchObject({ key: 'greeting', value: 'hello world' });

    // A node with another cookie that believes node 1 is its peer: it can neither win a vote nor write.
    const stranger = await cluster.start(4, { cookie: 'another-cluster-cookie' });
    expect(
      (
        await post(`${stranger.http}/init`, {
          initial_members: [cluster.member(stranger), cluster.member(one)],
        })
      ).status,
    ).toBe(200);
    // Both sides say what happened: the stranger that node 1 refused knows the cookies differ; node 1
    // cannot tell whose cookie is the right one.
    const refusedOurs = `auth: node 1 (peer ${peerIdOf(one)}) refused our cookie: the cookies differ`;
    const refusedTheirs = new RegExp(
      `auth: refused connection from peer ${peerIdOf(stranger)} at \\S+: it does not know this cluster's cookie \\(or the cookie differs\\)`,
    );
    await eventually(
      () =>
        stranger.log.some((line) => line.includes(refusedOurs)) &&
        one.log.some((line) => refusedTheirs.test(line)),
      15_000,
    );
    for (const line of [...stranger.log, ...one.log].filter((entry) => entry.includes('auth: ')))
      expect(JSON.parse(line)).toMatchObject({ level: 'warn', component: 'transport' });
    expect([...stranger.log, ...one.log].some((line) => line.includes('closed during authentication'))).toBe(
      false,
    );
    const strangerWrite = await post(`${stranger.http}/write`, {
      command: { Set: { key: 'greeting', value: 'intruder' } },
    });
    expect(strangerWrite.status).toBe(503);
    const after = await fetch(`${three.http}/read?key=greeting`);
    expect(await after.json()).toMatchObject({ value: 'hello world' });

    // SIGTERM shuts a node down in order and exits 0.
    const exited = new Promise<number | null>((resolvePromise) => {
      two.child.on('exit', resolvePromise);
    });
    two.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 90_000);
});
