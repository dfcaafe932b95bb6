import { assert } from '../../base/assert.ts';

/**
 * Datadriven scripts, as cockroachdb/datadriven (etcd-io/raft's testdata/*.txt): a text file of
 * cases, each a command line, a `----` line and the expected output, ended by a blank line.
 * Lines starting with `#` and blank lines between cases are comments, kept on rewrite.
 *
 *     # a comment
 *     propose 1 v1
 *     ----
 *     proposed at 3/2
 */
export const SEPARATOR = '----';
export const SCRIPT_LINES_MAX = 100_000;
/** Output lines a diff compares (past it, the diff shows the first differing line only). */
export const DIFF_LINES_MAX = 2_000;

export interface ScriptCase {
  /** 1-based line of the command in its file. */
  readonly line: number;
  /** Comment and blank lines before the command. */
  readonly leading: readonly string[];
  readonly command: string;
  readonly expected: string;
}

export interface Script {
  readonly cases: readonly ScriptCase[];
  /** Comment and blank lines after the last case. */
  readonly trailing: readonly string[];
}

/** A command line: its name, positional arguments and `key=value` arguments. */
export interface Command {
  readonly name: string;
  readonly positional: readonly string[];
  readonly named: ReadonlyMap<string, string>;
}

function isComment(line: string): boolean {
  return line.trim() === '' || line.startsWith('#');
}

export function parseScript(text: string, file: string): Script {
  const lines = text.split('\n');
  assert(lines.length <= SCRIPT_LINES_MAX, `${file}: more than ${SCRIPT_LINES_MAX} lines`);
  if (lines.at(-1) === '') lines.pop();
  const cases: ScriptCase[] = [];
  let leading: string[] = [];
  let position = 0;
  while (position < lines.length) {
    const line = lines[position] ?? '';
    if (isComment(line)) {
      leading.push(line);
      position += 1;
      continue;
    }
    if (lines[position + 1] !== SEPARATOR)
      throw new Error(`${file}:${position + 2}: expected "${SEPARATOR}" after the command "${line}"`);
    let end = position + 2;
    while (end < lines.length && (lines[end] ?? '') !== '') end += 1;
    cases.push({
      line: position + 1,
      leading,
      command: line,
      expected: lines.slice(position + 2, end).join('\n'),
    });
    leading = [];
    position = end + 1;
    if (end < lines.length) leading.push('');
  }
  return { cases, trailing: leading };
}

/** The script's text with `outputs[i]` as the output of case i (what a rewrite writes back). */
export function formatScript(script: Script, outputs: readonly string[]): string {
  assert(outputs.length === script.cases.length, 'one output per case');
  const lines: string[] = [];
  for (const [index, scriptCase] of script.cases.entries()) {
    lines.push(...scriptCase.leading, scriptCase.command, SEPARATOR, outputs[index] ?? '');
  }
  lines.push(...script.trailing);
  return `${lines.join('\n')}\n`;
}

/** `name a b key=value key=(1,2)`: whitespace-separated; values hold no spaces. */
export function parseCommand(text: string): Command {
  const [name, ...tokens] = text.trim().split(/\s+/);
  assert(name !== undefined && name !== '', 'a command has a name');
  const positional: string[] = [];
  const named = new Map<string, string>();
  for (const token of tokens) {
    const equals = token.indexOf('=');
    if (equals <= 0 || token.startsWith('(')) positional.push(token);
    else named.set(token.slice(0, equals), token.slice(equals + 1));
  }
  return { name, positional, named };
}

/** A line diff of expected against actual (`-` expected only, `+` actual only), by longest common subsequence. */
export function lineDiff(expected: string, actual: string): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  if (a.length > DIFF_LINES_MAX || b.length > DIFF_LINES_MAX) {
    let first = 0;
    while (first < a.length && a[first] === b[first]) first += 1;
    return `first difference at output line ${first + 1}:\n- ${a[first] ?? ''}\n+ ${b[first] ?? ''}`;
  }
  // common[i][j]: length of the longest common subsequence of a[i..] and b[j..].
  const common: number[][] = Array.from({ length: a.length + 1 }, () =>
    new Array<number>(b.length + 1).fill(0),
  );
  for (let i = a.length - 1; i >= 0; i -= 1) {
    const row = common[i] ?? [];
    const below = common[i + 1] ?? [];
    for (let j = b.length - 1; j >= 0; j -= 1)
      row[j] = a[i] === b[j] ? (below[j + 1] ?? 0) + 1 : Math.max(below[j] ?? 0, row[j + 1] ?? 0);
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push(`  ${a[i] ?? ''}`);
      i += 1;
      j += 1;
    } else if (i < a.length && (j === b.length || (common[i + 1]?.[j] ?? 0) >= (common[i]?.[j + 1] ?? 0))) {
      out.push(`- ${a[i] ?? ''}`);
      i += 1;
    } else {
      out.push(`+ ${b[j] ?? ''}`);
      j += 1;
    }
  }
  return out.join('\n');
}

export interface ScriptRun {
  /** One message per case whose output differs from the expected one. */
  readonly failures: readonly string[];
  /** The script with every case's actual output. */
  readonly rewritten: string;
}

/**
 * Run every case of a script through `run` (a fresh environment per script) and compare outputs.
 * An output is never empty (`ok` stands for nothing) and holds no blank line, which would end the case.
 */
export function runScript(file: string, text: string, run: (command: Command) => string[]): ScriptRun {
  const script = parseScript(text, file);
  const outputs: string[] = [];
  const failures: string[] = [];
  for (const scriptCase of script.cases) {
    let lines: string[];
    try {
      lines = run(parseCommand(scriptCase.command));
    } catch (error) {
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      throw new Error(`${file}:${scriptCase.line}: ${scriptCase.command}\n${message}`);
    }
    assert(!lines.includes(''), `${file}:${scriptCase.line}: output has a blank line`);
    const actual = lines.length === 0 ? 'ok' : lines.join('\n');
    outputs.push(actual);
    if (actual !== scriptCase.expected) {
      failures.push(
        `${file}:${scriptCase.line}: ${scriptCase.command}\noutput differs (- expected, + actual):\n` +
          lineDiff(scriptCase.expected, actual),
      );
    }
  }
  return { failures, rewritten: formatScript(script, outputs) };
}
