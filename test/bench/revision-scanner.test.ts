import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { RevisionScanner } from '../../src/bench/coordination-load.ts';

/** Scan `text` cut into pieces at `cuts` (character offsets; ASCII text, so bytes too). */
function scan(marker: string, text: string, cuts: readonly number[]): number[] {
  const seen: number[] = [];
  const scanner = new RevisionScanner(marker, (revision) => seen.push(revision));
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    scanner.push(Buffer.from(text.slice(from, cut)));
    from = cut;
  }
  scanner.push(Buffer.from(text.slice(from)));
  return seen;
}

const sse = (revisions: readonly number[]) =>
  revisions.map((revision) => `event: put\nid: ${revision}\ndata: {"revision":${revision}}\n\n`).join('');

describe('RevisionScanner', () => {
  it('reads SSE ids and etcd mod_revisions; a progress at a delivered revision is no new delivery', () => {
    expect(scan('\nid: ', `${sse([7, 8])}event: progress\nid: 8\ndata: {}\n\n${sse([12])}`, [])).toEqual([
      7, 8, 12,
    ]);
    const etcd = '{"result":{"header":{"revision":"9"},"events":[{"kv":{"mod_revision":"9"}}]}}\n';
    expect(scan('"mod_revision":"', etcd, [])).toEqual([9]);
  });

  it('waits for the digits to end before counting a revision cut at the end of a chunk', () => {
    expect(scan('\nid: ', sse([123]), [sse([123]).indexOf('23')])).toEqual([123]);
  });

  test.prop([
    fc.uniqueArray(fc.integer({ min: 1, max: 10_000_000 }), { maxLength: 40 }),
    fc.array(fc.nat(), { maxLength: 30 }),
  ])('any cutting of a stream into chunks yields its revisions once, in order', (revisions, cuts) => {
    const sorted = [...revisions].sort((a, b) => a - b);
    const text = sse(sorted);
    expect(
      scan(
        '\nid: ',
        text,
        cuts.map((cut) => cut % (text.length + 1)),
      ),
    ).toEqual(sorted);
  });
});
