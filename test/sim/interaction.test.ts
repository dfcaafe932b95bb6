import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCommand } from '../../src/sim/interaction/commands.ts';
import { lineDiff, parseScript, runScript } from '../../src/sim/interaction/datadriven.ts';
import { InteractionEnv } from '../../src/sim/interaction/env.ts';

/**
 * Interaction scripts (test/raft/testdata/*.txt, as etcd-io/raft's): each command's output must be
 * the one checked in. `ASPEN_REWRITE=1 npx vitest run test/sim/interaction.test.ts` writes the
 * actual outputs back instead (then read the diff before committing it).
 */
const TESTDATA = resolve(import.meta.dirname, '..', 'raft', 'testdata');
const REWRITE = process.env.ASPEN_REWRITE === '1';

function runFile(file: string, text: string): ReturnType<typeof runScript> {
  const env = new InteractionEnv();
  return runScript(`test/raft/testdata/${file}`, text, (command) => runCommand(env, command));
}

describe('interaction scripts', () => {
  const files = readdirSync(TESTDATA)
    .filter((file) => file.endsWith('.txt'))
    .sort();

  it('exist', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  for (const file of files) {
    it(file, () => {
      const path = join(TESTDATA, file);
      const text = readFileSync(path, 'utf8');
      const run = runFile(file, text);
      if (REWRITE) {
        if (run.rewritten !== text) writeFileSync(path, run.rewritten);
        return;
      }
      if (run.failures.length > 0) {
        expect.fail(
          `${run.failures.join('\n\n')}\n\nif the new output is right: ASPEN_REWRITE=1 npx vitest run test/sim/interaction.test.ts`,
        );
      }
    });
  }
});

describe('the datadriven runner', () => {
  const script =
    '# bootstrap\nadd-nodes 1 voters=(1)\n----\n1 added: snapshot 1/1 v=(1)\n\nstatus 1\n----\nwrong\n';

  it('reports a changed output with a diff, and rewrites it', () => {
    const run = runFile('inline.txt', script);
    expect(run.failures).toHaveLength(1);
    expect(run.failures[0]).toContain('inline.txt:6: status 1');
    expect(run.failures[0]).toContain('- wrong');
    expect(run.failures[0]).toContain('+ 1: follower term 1 vote 0 leader 0');
    const again = runFile('inline.txt', run.rewritten);
    expect(again.failures).toEqual([]);
    expect(again.rewritten).toBe(run.rewritten);
    expect(run.rewritten.startsWith('# bootstrap\nadd-nodes 1 voters=(1)\n----\n')).toBe(true);
  });

  it('keeps comments and blank lines on rewrite', () => {
    const text = '# a\n\nheal\n----\nok\n\n# b\nheal\n----\nok\n\n# end\n';
    expect(parseScript(text, 'x').cases).toHaveLength(2);
    expect(runFile('x.txt', text).rewritten).toBe(text);
  });

  it('refuses a command without its separator, and an unknown command', () => {
    expect(() => runFile('x.txt', 'heal\nok\n')).toThrow(/x.txt:2: expected "----"/);
    expect(() => runFile('x.txt', 'fly 1\n----\nok\n')).toThrow(/x.txt:1: fly 1[\s\S]*unknown command fly/);
  });

  it('diffs by lines', () => {
    expect(lineDiff('a\nb\nc', 'a\nx\nc')).toBe('  a\n- b\n+ x\n  c');
  });
});
