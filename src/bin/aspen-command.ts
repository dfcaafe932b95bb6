import type { Command } from 'commander';

/**
 * How each part of the aspen CLI registers a command: `spec` as commander takes it
 * (`put <key> <value>`), its help line, and more options or help through `extra`.
 */
export type AddCommand = (spec: string, description: string, extra?: (command: Command) => Command) => void;
