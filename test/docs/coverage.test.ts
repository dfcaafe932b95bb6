import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readDoc, REPO, SHELL_FENCE } from './walkthrough.ts';

/**
 * The docs cannot drift from the code: every shell block of these documents lies in a walkthrough
 * that a test in test/docs runs as written, or in a `run-by: .ci/run` region whose every command CI
 * runs word for word. A fence names its language (a bare ``` could hide a command), and no text
 * block holds a `$ command` transcript (commands go in sh blocks).
 */
const DOCS = ['README.md', 'docs/cli.md', 'docs/operations.md'] as const;
const WALKTHROUGH_OPEN = /^<!-- walkthrough: ([\w-]+) -->$/;
const WALKTHROUGH_CLOSE = /^<!-- \/walkthrough: ([\w-]+) -->$/;
const CI_OPEN = '<!-- run-by: .ci/run -->';
const CI_CLOSE = '<!-- /run-by: .ci/run -->';
/** A block no test can run (it installs a system service as root), with the reason written out. */
const NOT_RUN_OPEN = /^<!-- not-run: (.{20,}) -->$/;
const NOT_RUN_CLOSE = '<!-- /not-run -->';
/** Shell blocks of all the documents that may be not-run: each one is an exception, counted. */
const NOT_RUN_BLOCKS_MAX = 1;
/** Lines of one document looked at. */
const DOC_LINES_MAX = 20_000;

interface Block {
  readonly doc: string;
  readonly line: number;
  readonly language: string;
  readonly body: readonly string[];
  /** The walkthrough it lies in, 'ci' in a run-by region, null outside both. */
  readonly region: string | null;
}

/** Every fenced block of `doc`, with the region it lies in. */
function blocks(doc: string): Block[] {
  const lines = readDoc(doc).split('\n');
  expect(lines.length).toBeLessThan(DOC_LINES_MAX);
  const found: Block[] = [];
  let region: string | null = null;
  let fence: { line: number; language: string; body: string[] } | null = null;
  for (const [index, line] of lines.entries()) {
    if (fence !== null) {
      if (line.startsWith('```')) {
        found.push({ doc, line: fence.line, language: fence.language, body: fence.body, region });
        fence = null;
      } else fence.body.push(line);
      continue;
    }
    if (line.startsWith('```')) fence = { line: index + 1, language: line.slice(3).trim(), body: [] };
    const open = WALKTHROUGH_OPEN.exec(line);
    const notRun = NOT_RUN_OPEN.test(line);
    if (open !== null || line === CI_OPEN || notRun) {
      expect(region, `${doc}:${index + 1}: a region opens inside "${region ?? ''}"`).toBeNull();
      region = open?.[1] ?? (notRun ? 'not-run' : 'ci');
    }
    const close = WALKTHROUGH_CLOSE.exec(line);
    if (close !== null || line === CI_CLOSE || line === NOT_RUN_CLOSE) {
      const closed = close?.[1] ?? (line === NOT_RUN_CLOSE ? 'not-run' : 'ci');
      expect(region, `${doc}:${index + 1}: closes a region that is not open`).toBe(closed);
      region = null;
    }
  }
  expect(fence, `${doc}: a fence is never closed`).toBeNull();
  expect(region, `${doc}: region "${region ?? ''}" is never closed`).toBeNull();
  return found;
}

/** The sources of test/docs: a walkthrough is run when a test file names its document and it. */
const testSources = readdirSync(join(REPO, 'test/docs'))
  .filter((file) => file.endsWith('.test.ts'))
  .map((file) => readFileSync(join(REPO, 'test/docs', file), 'utf8'));

function runByATest(doc: string, name: string): boolean {
  return testSources.some(
    (source) =>
      source.includes(`'${doc}'`) && source.includes(`'${name}'`) && /(run|start)Walkthrough\(/.test(source),
  );
}

/** A shell line without its comment and prompt, or null when nothing is left. */
function command(line: string): string | null {
  const text = line
    .replace(/\s+#.*$/, '')
    .replace(/^#.*$/, '')
    .trim();
  return text.length === 0 ? null : text;
}

describe('every command in the docs is run by a test', () => {
  for (const doc of DOCS) {
    it(`${doc}: every shell block lies in a walkthrough a test runs, or is run by CI`, () => {
      const all = blocks(doc);
      const shells = all.filter((block) => SHELL_FENCE.test('```' + block.language));
      expect(shells.length).toBeGreaterThan(0);
      const outside = shells.filter((block) => block.region === null).map((block) => `${doc}:${block.line}`);
      expect(outside, 'shell blocks outside any walkthrough').toEqual([]);

      const names = new Set(
        shells
          .map((block) => block.region)
          .filter((name) => name !== null && name !== 'ci' && name !== 'not-run'),
      );
      const unrun = [...names].filter((name) => name !== null && !runByATest(doc, name));
      expect(unrun, `walkthroughs of ${doc} that no test in test/docs runs`).toEqual([]);

      const ciLines = new Set(
        readFileSync(join(REPO, '.ci/run'), 'utf8')
          .split('\n')
          .map((line) => line.trim()),
      );
      const notInCi = shells
        .filter((block) => block.region === 'ci')
        .flatMap((block) => block.body.map(command))
        .filter((text): text is string => text !== null && !ciLines.has(text));
      expect(notInCi, 'commands of a run-by: .ci/run region that .ci/run does not run').toEqual([]);
    });

    it(`${doc}: every fence names its language and no transcript hides a command`, () => {
      const all = blocks(doc);
      expect(all.filter((block) => block.language === '').map((block) => `${doc}:${block.line}`)).toEqual([]);
      const transcripts = all
        .filter((block) => !SHELL_FENCE.test('```' + block.language))
        .filter((block) => block.body.some((line) => line.startsWith('$ ')))
        .map((block) => `${doc}:${block.line}`);
      expect(transcripts).toEqual([]);
    });
  }

  it(`at most ${NOT_RUN_BLOCKS_MAX} shell block of them all is not run, each with its reason`, () => {
    const notRun = DOCS.flatMap((doc) => blocks(doc)).filter((block) => block.region === 'not-run');
    expect(notRun.length).toBeLessThanOrEqual(NOT_RUN_BLOCKS_MAX);
  });
});
