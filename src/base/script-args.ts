import { parseArgs } from 'node:util';

/** The options of a script, as node:util parseArgs takes them. */
type OptionSpecs = Record<string, { type: 'string' | 'boolean'; default?: string | boolean; short?: string }>;

/** An unknown or malformed option of a script (sysexits' EX_USAGE, as the simulator uses). */
export const SCRIPT_EXIT_USAGE = 64;

/**
 * The options of a script run through npm (`npm run sim -- --seeds 10`), by node:util parseArgs
 * (strict, no positionals): `--help` or `-h` prints `usage` on stdout and exits 0; an unknown or
 * malformed option prints one line and the usage on stderr and exits SCRIPT_EXIT_USAGE: never a
 * stack trace.
 */
export function scriptOptions<const T extends OptionSpecs>(
  name: string,
  usage: string,
  options: T,
  argv: readonly string[] = process.argv.slice(2),
) {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(usage);
    process.exit(0);
  }
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (!code.startsWith('ERR_PARSE_ARGS_')) throw error;
    process.stderr.write(`${name}: ${(error as Error).message.split('\n')[0] ?? ''}\n\n${usage}`);
    process.exit(SCRIPT_EXIT_USAGE);
  }
}
